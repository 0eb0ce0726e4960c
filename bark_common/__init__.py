"""Definitions the model server and the webhook sidecar share, with no heavy dependency.

The sidecar imports only this package from the model side, so `import webhook_sidecar` loads neither
kserve nor torch (a small, fast-starting container), while both processes still read one definition
of the request schema and one audio format table.
"""
