"""The reverse_proxy SSRF guard and API-root derivation."""
import pytest

from chatgpt_web.errors import BadRequest
from chatgpt_web.upstream.endpoints import from_base_url, from_reverse_proxy


def resolver_for(*addresses):
    return lambda host, port: list(addresses)


def test_base_url_maps_to_backend_api():
    upstream = from_base_url("https://chatgpt.com/")
    assert upstream.url("/conversation") == "https://chatgpt.com/backend-api/conversation"
    assert upstream.resolve == ()


@pytest.mark.parametrize("url, root", [
    ("https://proxy.example/api/conversation", "https://proxy.example/api"),
    ("https://proxy.example/backend-api/conversation/", "https://proxy.example/backend-api"),
    ("https://proxy.example:8443/x/backend-api/conversation", "https://proxy.example:8443/x/backend-api"),
])
def test_reverse_proxy_siblings_replace_trailing_conversation(url, root):
    upstream = from_reverse_proxy(url, (), resolver_for("93.184.216.34"))
    assert upstream.api_root == root
    assert upstream.url("/sentinel/chat-requirements") == root + "/sentinel/chat-requirements"


def test_public_reverse_proxy_is_pinned_to_checked_addresses():
    upstream = from_reverse_proxy("https://proxy.example/api/conversation", (),
                                  resolver_for("93.184.216.34", "2606:2800:220:1::1"))
    assert upstream.resolve == ("proxy.example:443:93.184.216.34,[2606:2800:220:1::1]",)


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "172.16.0.9", "192.168.1.1", "169.254.169.254", "0.0.0.0",
    "::1", "fd00::1", "fe80::1", "::ffff:127.0.0.1", "100.64.0.1", "224.0.0.1",
])
def test_reverse_proxy_to_private_address_is_refused(address):
    with pytest.raises(BadRequest) as caught:
        from_reverse_proxy("https://evil.example/api/conversation", (), resolver_for(address))
    assert caught.value.code == "reverse_proxy_not_allowed"


def test_reverse_proxy_with_one_private_address_among_public_is_refused():
    with pytest.raises(BadRequest):
        from_reverse_proxy("https://evil.example/api/conversation", (),
                           resolver_for("93.184.216.34", "127.0.0.1"))


def test_plain_http_reverse_proxy_is_refused_unless_allowed():
    with pytest.raises(BadRequest) as caught:
        from_reverse_proxy("http://proxy.example/api/conversation", (), resolver_for("93.184.216.34"))
    assert caught.value.code == "reverse_proxy_not_allowed"
    allowed = from_reverse_proxy("http://127.0.0.1:9000/api/conversation", ("http://127.0.0.1:9000",),
                                 resolver_for())
    assert allowed.api_root == "http://127.0.0.1:9000/api" and allowed.resolve == ()


def test_allowed_prefix_must_end_at_a_path_boundary():
    with pytest.raises(BadRequest):
        from_reverse_proxy("http://127.0.0.1:90000/api/conversation", ("http://127.0.0.1:9000",),
                           resolver_for("127.0.0.1"))


@pytest.mark.parametrize("url", [
    "ftp://proxy.example/api/conversation", "proxy.example/api/conversation",
    "https://proxy.example/api/models", "https://user:pw@proxy.example/api/conversation",
    "https://proxy.example/api/conversation?x=1",
])
def test_malformed_reverse_proxy_is_refused(url):
    with pytest.raises(BadRequest):
        from_reverse_proxy(url, (), resolver_for("93.184.216.34"))


def test_unresolvable_reverse_proxy_is_a_client_error():
    def failing(host, port):
        raise OSError("no such host")
    with pytest.raises(BadRequest) as caught:
        from_reverse_proxy("https://nowhere.invalid/api/conversation", (), failing)
    assert caught.value.code == "invalid_reverse_proxy"
