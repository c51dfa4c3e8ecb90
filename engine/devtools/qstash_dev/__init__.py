"""The local QStash-compatible server (``hopflow qstash-dev``, docs/qstash.md): server.py speaks
QStash's messaging API and delivers; schedules.py is its schedules API and their clock (handed the
server's parse/accept, so it never imports server.py).
"""
