"""The voices API: list, upload, read, publish and delete custom voices (protocol / serving / routes)."""
