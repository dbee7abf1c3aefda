#!/usr/bin/env bash
# Prints a new Ed25519 signing key for BERTH_SIGNING_KEY: `<kid>:<base64url 32-byte seed>`.
exec python3 -c 'import base64, secrets
e = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
print(e(secrets.token_bytes(6)) + ":" + e(secrets.token_bytes(32)))'
