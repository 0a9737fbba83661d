"""Operational endpoints: the landing page."""
from __future__ import annotations

from flask import Blueprint, jsonify

blueprint = Blueprint("ops", __name__)


@blueprint.get("/")
def index():
    """Tell a visitor the service is deployed and where to start."""
    return jsonify({"status": "ok", "message": "chatgpt_web is deployed",
                    "endpoints": ["/get_access_token", "/send_message",
                                  "/v1/chat/completions", "/v1/models"]})
