#!/usr/bin/env python3
"""An integration as any OAuth 2.0 client library would write it: requests
with requests-oauthlib's BackendApplicationClient (client credentials)
obtains a token, creates a user, attaches a policy, finds the audit events
naming that change, and deletes the user. Prints one JSON object with each
step's status.

usage: oauth_client.py BASE_URL CA_FILE KEY_ID KEY_SECRET USER
"""
import json
import sys

try:
    from oauthlib.oauth2 import BackendApplicationClient
    from requests.auth import HTTPBasicAuth
    from requests_oauthlib import OAuth2Session
except ImportError:
    sys.exit("requests-oauthlib is missing: pip install 'requests-oauthlib==2.0.0' (.ci/run does)")


def main():
    base, ca, key_id, secret, user = sys.argv[1:6]
    session = OAuth2Session(client=BackendApplicationClient(client_id=key_id))
    # The gateway's own CA; the environment's CA bundle (REQUESTS_CA_BUNDLE)
    # must not replace it.
    session.trust_env = False
    session.verify = ca
    token = session.fetch_token(token_url=f"{base}/oauth/token", auth=HTTPBasicAuth(key_id, secret))
    out = {"token_type": token.get("token_type"), "expires_in": token.get("expires_in")}
    r = session.post(f"{base}/api/v1/users", json={"name": user, "email": f"{user}@example.net"})
    out["create"] = r.status_code
    r = session.put(f"{base}/api/v1/users/{user}/policies/ReadOnly")
    out["attach"] = r.status_code
    r = session.get(f"{base}/api/v1/users/{user}")
    out["show"] = r.status_code
    out["policies"] = r.json().get("policies") if r.ok else None
    r = session.get(f"{base}/api/v1/audit/events", params={"code": "admin.change", "limit": 50})
    out["events"] = r.status_code
    out["events_name_user"] = r.ok and user in r.text
    r = session.delete(f"{base}/api/v1/users/{user}")
    out["delete"] = r.status_code
    r = session.get(f"{base}/api/v1/users/{user}")
    out["gone"] = r.status_code
    out["gone_type"] = r.headers.get("content-type")
    print(json.dumps(out))


main()
