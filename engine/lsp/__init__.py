"""``hopflow lsp``: a language server for workflow files (pygls, an optional extra: ``hopflow[lsp]``).

``positions`` converts columns (hopflow counts code points, LSP clients UTF-16 code units),
``analysis`` answers the editor's questions from the text alone (no pygls, testable in process),
``server`` wires both to the protocol. ``dsl`` never imports this package.
"""
