"""Vercel entry point: vercel.json rewrites every path here; the app is ``engine.asgi:app``.

The app configures itself from the environment on its first request (docs/deploy.md lists the
variables), so this import stays cheap on a cold start.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine.asgi import app

__all__ = ["app"]
