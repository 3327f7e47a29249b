#!/usr/bin/env python3
"""A tiny Docker-style token server for tests: GET /token?service=&scope=... answers a JWT
signed RS256 (via openssl) with an x5c header the registry verifies against its rootcertbundle.
Valid basic credentials get every action asked for; anonymous callers get pull only; wrong
credentials get 401. Each request is appended to DIR/token.log (scopes and user, no secrets)."""
import base64, json, os, subprocess, sys, time, uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse, parse_qs

port, d, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
SERVICE, ISSUER = "kiln-test-registry", "kiln-test-issuer"

def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

with open(os.path.join(d, "token.crt")) as f:
    pem = f.read()
der = base64.b64decode("".join(l for l in pem.splitlines() if "CERTIFICATE" not in l))

def sign(claims):
    header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", os.path.join(d, "token.key")],
                         input=signing_input.encode(), capture_output=True, check=True).stdout
    return signing_input + "." + b64(sig)

class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_GET(self):
        u = urlparse(self.path)
        q = parse_qs(u.query)
        who = "anonymous"
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            u_, _, p_ = base64.b64decode(auth[6:]).decode().partition(":")
            if (u_, p_) != (user, password):
                self.send_response(401); self.end_headers(); return
            who = u_
        access = []
        for s in q.get("scope", []):
            for scope in s.split(" "):
                typ, _, rest = scope.partition(":")
                name, _, actions = rest.rpartition(":")
                acts = actions.split(",")
                if who == "anonymous":
                    acts = [a for a in acts if a == "pull"]
                access.append({"type": typ, "name": name, "actions": acts})
        with open(os.path.join(d, "token.log"), "a") as f:
            f.write(json.dumps({"user": who, "scope": q.get("scope", [])}) + "\n")
        now = int(time.time())
        tok = sign({"iss": ISSUER, "sub": who, "aud": SERVICE, "exp": now + 300, "nbf": now - 10,
                    "iat": now, "jti": str(uuid.uuid4()), "access": access})
        body = json.dumps({"token": tok, "expires_in": 300}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
