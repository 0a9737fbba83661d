"""The relay: OpenAI-compatible upstreams (the official API, DeepSeek, vLLM, Ollama...) served
beside the ChatGPT web accounts, under the service's own client keys. See docs/relay.md.

plan.py parses UPSTREAMS_FILE (read once by create_app, which resolves its env: references from
the same variables as the settings); service.py assembles the rest for the relay faces
(api/relay_api.py) and the chat routing hook (api/relay_requests.py).
"""
