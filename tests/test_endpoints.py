"""The reverse_proxy SSRF guard and API-root derivation."""
import pytest

from chatgpt_web.errors import BadRequest
from chatgpt_web.upstream.endpoints import (
    from_base_url,
    from_reverse_proxy,
    is_allowed_proxy,
    is_public,
)


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
        from_reverse_proxy("http://proxy.example/api/conversation", (),
                           resolver_for("93.184.216.34"))
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


ALLOWED = ("http://allowed.example/api",)


@pytest.mark.parametrize("url", [
    "http://allowed.example/api/../backend-api/conversation",
    "http://allowed.example/api/./../backend-api/conversation",
    "http://allowed.example/api/%2e%2e/backend-api/conversation",
    "http://allowed.example/api/%2E./backend-api/conversation",
    "http://allowed.example/api/%252e%252e/backend-api/conversation",
    "http://allowed.example/api/../../../backend-api/conversation",
    "http://allowed.example/api/..%2fbackend-api/conversation",
    "http://allowed.example/api/..\\backend-api/conversation",
    "http://allowed.example/api/..;/backend-api/conversation",
])
def test_dot_segments_never_pass_an_allowed_prefix(url):
    with pytest.raises(BadRequest) as caught:
        from_reverse_proxy(url, ALLOWED, resolver_for("93.184.216.34"))
    assert caught.value.code == "reverse_proxy_not_allowed"
    assert not is_allowed_proxy(url, ALLOWED)


@pytest.mark.parametrize("url", [
    "HTTP://Allowed.Example/api/conversation", "http://allowed.example:80/api/conversation",
])
def test_prefixes_compare_as_urls_not_spellings(url):
    assert is_allowed_proxy(url, ALLOWED)
    assert from_reverse_proxy(url, ALLOWED, resolver_for()).resolve == ()


@pytest.mark.parametrize("url", [
    "https://proxy.example:99999/api/conversation", "https://proxy.example:abc/api/conversation",
    "https://[::1/api/conversation", "https://::1]/api/conversation",
    "https://[not-an-ip]/api/conversation",
])
def test_bad_port_or_brackets_are_a_client_error(url):
    with pytest.raises(BadRequest) as caught:
        from_reverse_proxy(url, (), resolver_for("93.184.216.34"))
    assert caught.value.code in ("invalid_reverse_proxy", "reverse_proxy_not_allowed")


@pytest.mark.parametrize("address", [
    "::7f00:1",                 # IPv4-compatible 127.0.0.1
    "::a9fe:a9fe",              # IPv4-compatible 169.254.169.254
    "::ffff:0:a00:1",           # IPv4-translated 10.0.0.1
    "64:ff9b::7f00:1",          # NAT64 127.0.0.1
    "64:ff9b::a9fe:a9fe",       # NAT64 169.254.169.254
    "64:ff9b:1::5db8:d822",     # local-use NAT64, whatever it embeds
    "2002:7f00:1::1",           # 6to4 of 127.0.0.1
    "2002:c0a8:101::1",         # 6to4 of 192.168.1.1
    "fec0::1",                  # site-local
    "100::1",                   # discard-only (reserved)
    "not an address",
])
def test_ipv6_forms_that_reach_private_or_reserved_space_are_refused(address):
    assert not is_public(address)
    with pytest.raises(BadRequest) as caught:
        from_reverse_proxy("https://evil.example/api/conversation", (), resolver_for(address))
    assert caught.value.code == "reverse_proxy_not_allowed"


@pytest.mark.parametrize("address", ["64:ff9b::5db8:d822", "2002:5db8:d822::1",
                                     "2606:2800:220:1::1"])
def test_ipv6_forms_of_a_public_ipv4_address_stay_public(address):
    # An IPv6-only host behind DNS64 reaches every IPv4 site through 64:ff9b::/96.
    assert is_public(address)


def test_non_ascii_hosts_are_refused_so_the_pin_covers_what_curl_resolves():
    looked_up = []
    with pytest.raises(BadRequest) as caught:
        from_reverse_proxy("https://bücher.example/api/conversation", (),
                           lambda host, port: looked_up.append(host) or ["93.184.216.34"])
    assert caught.value.code == "invalid_reverse_proxy" and not looked_up
    upstream = from_reverse_proxy("https://xn--bcher-kva.example/api/conversation", (),
                                  resolver_for("93.184.216.34"))
    assert upstream.resolve == ("xn--bcher-kva.example:443:93.184.216.34",)
