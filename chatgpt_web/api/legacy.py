"""The original endpoints: POST /get_access_token and POST /send_message."""
from __future__ import annotations

from flask import Blueprint

blueprint = Blueprint("legacy", __name__)
