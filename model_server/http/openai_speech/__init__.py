"""OpenAI-compatible `POST /v1/audio/speech`: protocol (wire format), serving (logic), api_router (HTTP)."""
