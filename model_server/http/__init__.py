"""HTTP: middleware, error answers, OpenAPI, the routes (KServe v1, OpenAI speech, voices, playground)."""
