"""The ChatGPT web backend: endpoints, sentinel, proof of work, conversation, stream.

No Flask here.
"""
