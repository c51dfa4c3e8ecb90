"""``hopflow test``: run the cases of ``NAME.test.yaml`` files on the real interpreter, in process.

One module per idea, imported one way (``runner`` at the top):

* :mod:`~engine.testing.spec`      a test file's cases as runnable values (times, mocks, expectations)
* :mod:`~engine.testing.mocks`     answers for http/action calls by step id, and the calls made
* :mod:`~engine.testing.harness`   a virtual clock and a due-time queue that drive ``Runtime.advance``
* :mod:`~engine.testing.expect`    expectations against what happened, with readable diffs
* :mod:`~engine.testing.coverage`  which steps, switch cases, catches, retries, timeouts and
  compensations ran; a table and an annotated listing of the YAML
* :mod:`~engine.testing.select`    ``-k`` expressions
* :mod:`~engine.testing.report`    the text report and JUnit XML
* :mod:`~engine.testing.server`     the private embedded Redis the cases run on (one db per worker)
* :mod:`~engine.testing.runner`    discovery, isolation, parallel workers, the overall result
* :mod:`~engine.testing.pytest_plugin`  ``*.test.yaml`` files as pytest items
"""
