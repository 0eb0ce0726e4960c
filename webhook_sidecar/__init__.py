"""The async job sidecar: take TTS jobs over HTTP or CloudEvents, run them, deliver signed webhooks.

It runs next to the model server in the predictor pod (`python -m webhook_sidecar`, port 9081) and
keeps every job in SQLite on a volume, so a killed or restarted pod resumes where it stopped.
"""
