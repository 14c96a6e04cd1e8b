"""Where `rice_mlops.release.oci.Registry` sends the registry's credentials: the registry's own
origin and an https (or same-origin) token realm, nowhere else, and nothing before it checked."""

from __future__ import annotations

import httpx
import pytest

from rice_mlops.release.oci import Registry, RegistryError
from tests.helpers.oci_double import TOKEN, RegistryDouble

NAME = "rice-classifier"


def _pushed(double: RegistryDouble) -> str:
    return double.put_image(NAME, [], env=[], tag="v1")


@pytest.mark.parametrize("realm", [
    "http://evil.test/token",  # plain http on another host
    "http://registry.test:8080/token",  # the registry's host, another port, plain http
    "ftp://evil.test/token",
], ids=["http-elsewhere", "http-other-port", "other-scheme"])
def test_a_realm_neither_https_nor_the_registry_gets_no_credentials(realm):
    double = RegistryDouble(realm=realm)
    _pushed(double)
    with double.client() as registry, pytest.raises(RegistryError, match="not sent there"):
        registry.manifest(NAME, "v1")
    assert not [url for url, _, _ in double.requests if url.startswith(realm.split("/token")[0]
                                                                      + "/token")]
    assert double.authorizations_sent_to(realm.split("/token")[0]) == []


def test_an_http_registry_may_name_a_realm_on_its_own_origin():
    double = RegistryDouble(scheme="http", host="127.0.0.1:5000",
                            realm="http://127.0.0.1:5000/token")
    digest = _pushed(double)
    with double.client() as registry:
        assert registry.manifest(NAME, "v1")[2] == digest


def test_an_https_realm_on_another_host_gets_the_basic_credentials_once_then_a_token():
    double = RegistryDouble(realm="https://auth.test/token")
    digest = _pushed(double)
    with double.client() as registry:
        assert registry.manifest(NAME, "v1")[2] == digest
    realm_auth = double.authorizations_sent_to("https://auth.test")
    assert len(realm_auth) == 1 and realm_auth[0].startswith("Basic ")
    registry_auth = double.authorizations_sent_to(double.origin)
    assert f"Bearer {TOKEN}" in registry_auth


def test_an_upload_location_on_another_origin_is_refused_before_sending():
    double = RegistryDouble()
    original = double._route

    def elsewhere(request, path):
        response = original(request, path)
        if request.method == "POST":
            response.headers["location"] = "http://evil.test/upload/1"
        return response

    double._route = elsewhere
    with double.client() as registry, pytest.raises(RegistryError, match="not its own origin"):
        registry.push_blob(NAME, b"data")
    assert not [url for url, _, _ in double.requests if "evil.test" in url]


def test_a_blob_redirect_to_storage_elsewhere_carries_no_credentials():
    double = RegistryDouble()
    digest = double.put_blob(b"layer bytes")
    seen = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "storage.test":
            seen.append(request.headers.get("authorization"))
            return httpx.Response(200, content=iter([b"layer bytes"]))
        if "/blobs/" in request.url.path:
            return httpx.Response(307, headers={"location": "https://storage.test/b?sig=1"})
        return double.handle(request)

    with Registry(double.origin, double.username, double.password,
                  transport=httpx.MockTransport(handle)) as registry:
        assert registry.blob(NAME, digest) == b"layer bytes"
    assert seen == [None]


def test_a_content_encoded_blob_is_refused_not_decoded():
    def handle(request: httpx.Request) -> httpx.Response:
        assert request.headers["accept-encoding"] == "identity"
        return httpx.Response(200, headers={"content-encoding": "gzip"},
                              content=iter([b"\x1f\x8b..."]))

    with Registry("https://registry.test", transport=httpx.MockTransport(handle)) as registry, \
            pytest.raises(RegistryError, match="gzip-encoded"):
        registry.blob(NAME, "sha256:" + "0" * 64)


def test_the_password_is_not_in_the_client_s_repr():
    with Registry("https://registry.test", "rice", "s3cret") as registry:
        assert "s3cret" not in repr(registry)
