"""``python -m engine.devtools.qstash_dev``: the dev server without the hopflow CLI."""

from engine.devtools.qstash_dev.server import main

raise SystemExit(main())
