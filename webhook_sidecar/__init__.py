"""The async job sidecar: take TTS jobs over HTTP or CloudEvents, run them, deliver signed webhooks.

It runs next to the model server in the predictor pod (`python -m webhook_sidecar`, port 9081) and
keeps every job in a store (`SIDECAR_DATABASE_URL`): PostgreSQL shared by every replica, where a dead
sidecar's leased work is taken over by the others, or SQLite on a volume for a single replica, where a
killed or restarted pod resumes where it stopped. It imports neither kserve nor torch.
"""
