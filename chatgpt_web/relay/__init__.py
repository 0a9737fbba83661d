"""The relay: OpenAI-compatible upstreams (the official API, DeepSeek, vLLM, Ollama...) served
beside the ChatGPT web accounts, under the service's own client keys. See docs/relay.md.

plan.py parses UPSTREAMS_FILE (imported by config.py, so it depends on errors.py only); the
other modules are used by the relay faces (api/relay_api.py) and the chat routing hook.
"""
