from __future__ import annotations

import pytest

from fedser_server.security.certs import DevCA


@pytest.fixture(scope="module")
def pki():
    """A real CA with a server certificate (localhost, 127.0.0.1) and a client certificate."""
    ca = DevCA()
    return {"ca": ca, "server": ca.server(), "client": ca.client("alice"), "stranger_ca": DevCA("another CA")}
