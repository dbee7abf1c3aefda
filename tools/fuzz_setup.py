"""Arranges real resources for scripts/fuzz.sh and writes the schemathesis config that
points the fuzzer's path parameters (and a few body fields) at them.

Usage: fuzz_setup.py BASE_URL OUT_DIR. Writes OUT_DIR/schemathesis.toml and OUT_DIR/token
(the access token, mode 600). Standard library only.

What it makes, through the API only: user A (the fuzzer acts as A, the admin) and an
organization with three clusters, four deployments (three running, one queued), two more
members who joined through invites, one open invite, an API key and an agent token.
"""

import json
import os
import random
import sys
import urllib.error
import urllib.request
import uuid

PASSWORD = "correct horse battery staple"


class Api:
    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        # A client address of the fuzz run's own (a documentation range, sent only as a
        # header), so the login throttle of other callers never meets ours.
        self.ip = f"192.0.2.{random.randint(1, 254)}"

    def call(self, method: str, path: str, body=None, token=None, expect=(200, 201)):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("cf-connecting-ip", self.ip)
        if data is not None:
            req.add_header("content-type", "application/json")
        if token:
            req.add_header("authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as res:
                status, raw = res.status, res.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        if status not in expect:
            sys.exit(f"fuzz setup: {method} {path} answered {status}: {raw[:500]!r}")
        return json.loads(raw) if raw else None


def user(api: Api, name: str):
    email = f"fuzz-{name}-{uuid.uuid4().hex}@example.com"
    api.call("POST", "/v1/auth/register", {"email": email, "password": PASSWORD, "name": name})
    pair = api.call("POST", "/v1/auth/login", {"email": email, "password": PASSWORD})
    me = api.call("GET", "/v1/me", token=pair["access_token"])
    return email, me["user"]["id"], pair


def toml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string of printable ASCII is a valid TOML basic string


def main() -> None:
    base, out = sys.argv[1], sys.argv[2]
    api = Api(base)
    _, _, a = user(api, "fuzzer")
    tok = a["access_token"]
    org = api.call("POST", "/v1/orgs", {"name": "Fuzz"}, tok)["id"]
    capacity = {"cpu_millis": 8000, "memory_mib": 32768, "gpus": 2}
    c1, doomed = (
        api.call("POST", f"/v1/orgs/{org}/clusters", {"name": n, "capacity": capacity}, tok)["id"]
        for n in ("fuzz-1", "fuzz-doomed")
    )
    # As large as a cluster may be, so that the submissions generated from the schema (any
    # size up to 2^40 - 1) fit it rather than all being 422 "larger than the cluster".
    roomy = {"cpu_millis": 2**40 - 1, "memory_mib": 2**40 - 1, "gpus": 2**40 - 1}
    c2 = api.call("POST", f"/v1/orgs/{org}/clusters", {"name": "fuzz-2", "capacity": roomy},
                  tok)["id"]

    def deploy(cluster: str, name: str, cpu: int, status: str) -> str:
        body = {
            "name": name,
            "image": "ghcr.io/acme/trainer:1.4",
            "resources": {"cpu_millis": cpu, "memory_mib": 1024, "gpus": 0},
        }
        d = api.call("POST", f"/v1/clusters/{cluster}/deployments", body, tok)
        if d["status"] != status:
            sys.exit(f"fuzz setup: deployment {name} is {d['status']}, not {status}")
        return d["id"]

    big = deploy(c1, "big", 6000, "running")
    waits = deploy(c1, "waits", 6000, "queued")  # behind `big`: what cancel needs
    to_stop = deploy(c2, "to-stop", 1000, "running")
    to_finish = deploy(c2, "to-finish", 1000, "running")

    def member(name: str, role: str):
        invite = api.call("POST", f"/v1/orgs/{org}/invites", {"role": role}, tok)
        email, uid, pair = user(api, name)
        api.call("POST", "/v1/invites/accept", {"code": invite["code"]}, pair["access_token"])
        return invite["id"], email, uid, pair

    used_invite, b_email, b_id, b = member("member", "developer")
    _, _, c_id, _ = member("leaver", "viewer")
    open_invite = api.call("POST", f"/v1/orgs/{org}/invites",
                           {"role": "viewer", "max_uses": 5}, tok)
    key = api.call("POST", f"/v1/orgs/{org}/api-keys", {"name": "fuzz", "role": "developer"}, tok)
    agent = api.call("POST", f"/v1/clusters/{c1}/agent-tokens", {"name": "fuzz-agent"}, tok)

    dictionaries = {
        "org": [org],
        "cluster": [c1, c2],
        "doomed_cluster": [doomed],
        "roomy_cluster": [c2],
        "resized_cluster": [c1],
        "deployment": [big, waits, to_stop, to_finish],
        "queued_deployment": [waits],
        "stop_deployment": [to_stop],
        "finish_deployment": [to_finish],
        "member": [b_id],
        "leaver": [c_id],
        "invite": [used_invite, open_invite["id"]],
        "key": [key["id"]],
        "agent_token": [agent["id"]],
        "invite_code": [open_invite["code"]],
        "refresh": [b["refresh_token"]],
        "email": [b_email],
        "password": [PASSWORD],
    }
    # Path ids hit the real resources in 80% of the cases and stay random (→ 404) in the
    # rest; the body fields are real less often, so that their invalid forms are tried too.
    # The fuzzer's own user (A, the organization's only admin) is in no dictionary: demoting
    # itself would turn the rest of the run into 403s. Deleting, stopping, cancelling and
    # finishing get resources of their own, so the other operations keep live ones.
    bindings = {
        "path.org_id": ("org", 0.8),
        "path.cluster_id": ("cluster", 0.8),
        "path.deployment_id": ("deployment", 0.8),
        "path.user_id": ("member", 0.8),
        "path.invite_id": ("invite", 0.8),
        "path.key_id": ("key", 0.8),
        "path.token_id": ("agent_token", 0.8),
        "body.code": ("invite_code", 0.5),
        "body.refresh_token": ("refresh", 0.3),
        "body.email": ("email", 0.3),
        "body.password": ("password", 0.3),
    }
    per_operation = {
        "delete_cluster": ("path.cluster_id", "doomed_cluster"),
        "create_deployment": ("path.cluster_id", "roomy_cluster"),
        # Resizes never shrink the roomy cluster that submissions go to.
        "update_cluster": ("path.cluster_id", "resized_cluster"),
        "cancel_deployment": ("path.deployment_id", "queued_deployment"),
        "stop_deployment": ("path.deployment_id", "stop_deployment"),
        "finish_deployment": ("path.deployment_id", "finish_deployment"),
        "delete_member": ("path.user_id", "leaver"),
        "update_member": ("path.user_id", "member"),
    }
    # Always the dictionary's, never an id the fuzzer read elsewhere: the user ids it sees
    # include its own (GET /v1/me), and removing or demoting itself would turn the rest of
    # the run into 404s or 403s (schemathesis then reports the submissions as "mostly
    # rejected", for no fault of the schema's).
    certain = {"delete_member", "update_member"}
    lines = ["# Written by tools/fuzz_setup.py for one run of scripts/fuzz.sh.", ""]
    for name, values in dictionaries.items():
        lines.append(f"[dictionaries.{name}]")
        lines.append("values = [" + ", ".join(toml_str(v) for v in values) + "]")
    lines += ["", "[parameters]"]
    for key_, (name, p) in bindings.items():
        lines.append(f'"{key_}" = {{ dictionary = "{name}", probability = {p} }}')
    for op, (key_, name) in per_operation.items():
        lines += ["", "[[operations]]", f'include-operation-id = "{op}"',
                  f'parameters = {{ "{key_}" = {{ dictionary = "{name}", '
                  f'probability = {1.0 if op in certain else 0.8} }} }}']
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "schemathesis.toml"), "w") as f:
        f.write("\n".join(lines) + "\n")
    token_path = os.path.join(out, "token")
    fd = os.open(token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(tok)
    print(f"fuzz setup: organization {org}: 3 clusters, 4 deployments (3 running, 1 queued), "
          "3 members, 3 invites, 1 API key, 1 agent token")


if __name__ == "__main__":
    main()
