"""Who may join: enrolment tokens when any exist, open enrolment only when asked for (or on
plaintext loopback, where there is nothing to protect)."""

from __future__ import annotations

from fedser_server.security.tokens import TokenStore
from fedser_shared.errors import ConfigError
from fedser_shared.logging import get_logger

log = get_logger(__name__)


def enrolment_policy(store: TokenStore, open_enrolment: bool, insecure: bool) -> TokenStore | None:
    """The token store to enforce, or None for open enrolment."""
    n_tokens = len(store)
    if open_enrolment:
        if n_tokens:
            raise ConfigError(f"--open-enrolment would ignore the {n_tokens} token(s) in {store.path}; revoke them or drop the flag")
        log.warning("enrolment_open", reason="--open-enrolment")
        return None
    if n_tokens:
        return store
    if insecure:
        log.warning("enrolment_open", reason="--insecure and no tokens", tokens_file=str(store.path))
        return None
    raise ConfigError(f"no enrolment tokens in {store.path}: create one with `fedser-server token add NAME` "
                      "(same --state-dir/--tokens-file), or pass --open-enrolment to let any client join")
