"""bark-kserve: Suno's Bark text-to-speech as a KServe model server."""

__version__ = "0.1.0"
