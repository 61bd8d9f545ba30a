"""A local Google Cloud Storage for the tests: gcp-storage-emulator (from PyPI) in a child
process, and a small HTTPS proxy in front of it for TensorFlow.

    with GcsEmulator("test-bucket") as gcs:
        os.environ.update(gcs.env())      # before the first gs:// call of any client
        ...  # google-cloud-storage, Beam's gcsio, pyarrow's gs://, tf.io.gfile: plain gs:// URIs

How each client of the project reaches it (`env()`):
- google-cloud-storage, and Beam's gcsio built on it: STORAGE_EMULATOR_HOST.
- pyarrow (google-cloud-cpp inside): CLOUD_STORAGE_EMULATOR_ENDPOINT, and a service-account
  key no Google service knows (GOOGLE_APPLICATION_CREDENTIALS) so that it signs its own token
  offline. Beam's credentials lookup takes that key too, rather than retrying ~24 s for one.
- TensorFlow's built-in gs:// filesystem has its endpoints hard-coded
  (https://www.googleapis.com/storage/v1/ in tsl's gcs_file_system.cc; no variable moves
  them), and tensorflow-io-gcs-filesystem 0.37.1, the plugin that reads an endpoint, does not
  load into TF 2.21 (undefined symbol TF_VLog). TF's libcurl honours https_proxy and
  CURL_CA_BUNDLE, so TF goes through the proxy here: it accepts the CONNECT, answers TLS with
  a certificate of a throwaway CA made at start, and forwards each request to the emulator.
  Two answers are the proxy's own: the key's OAuth token endpoint, and the bucket's
  `storageLayout` (TF asks it before renaming a folder; the emulator has no such endpoint).

The emulator runs in a child process: tf.io.TFRecordWriter holds the GIL during its HTTP
calls, which would deadlock an emulator served by a thread of the test process. It keeps
objects in memory and serves one request at a time: test sizes only. Run as a script it is
that child: `python -m tests.gcs_emulator BUCKET` prints one JSON line, and serves until its
stdin closes.
"""

from __future__ import annotations

import datetime
import http.client
import http.server
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import threading

HOSTS = [
    "www.googleapis.com",
    "storage.googleapis.com",
    "oauth2.googleapis.com",
    "*.googleapis.com",
]


# ---------------------------------------------------------------- child process side
def _make_certs(folder):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    day = datetime.timedelta(days=1)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "swiperec tests: local GCS CA")])
    ku = x509.KeyUsage(
        digital_signature=True,
        key_cert_sign=True,
        crl_sign=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        encipher_only=False,
        decipher_only=False,
    )
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - day)
        .not_valid_after(now + 2 * day)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(ku, critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTS[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - day)
        .not_valid_after(now + day)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(h) for h in HOSTS]), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    def pem(certificate):
        return certificate.public_bytes(serialization.Encoding.PEM)

    paths = {n: os.path.join(folder, n) for n in ("ca.pem", "leaf.pem", "leaf.key")}
    with open(paths["ca.pem"], "wb") as f:
        f.write(pem(ca))
    with open(paths["leaf.pem"], "wb") as f:
        f.write(pem(leaf) + pem(ca))
    with open(paths["leaf.key"], "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return paths


class _Proxy(http.server.BaseHTTPRequestHandler):
    """CONNECT -> TLS with the test CA's certificate -> each request forwarded to the emulator."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else every response stalls ~40 ms (Nagle + delayed ACK)
    upstream = None
    tls = None

    def log_message(self, *args):
        pass

    def do_CONNECT(self):
        self.send_response(200, "Connection established")
        self.end_headers()
        self.connection = self.tls.wrap_socket(self.connection, server_side=True)
        self.rfile = self.connection.makefile("rb", self.rbufsize)
        self.wfile = self.connection.makefile("wb", 0)
        self.close_connection = False

    def _json(self, obj):
        data = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _forward(self):
        body, path = self._body(), self.path
        if "://" in path:  # absolute-form request line
            path = "/" + path.split("://", 1)[1].split("/", 1)[1]
        if path.split("?")[0] == "/token":  # OAuth2 token endpoint (the fake ADC's token_uri)
            return self._json(
                {"access_token": "emulator-token", "expires_in": 3600, "token_type": "Bearer"}
            )
        m = re.fullmatch(r"/storage/v1/b/([^/?]+)/storageLayout(\?.*)?", path)
        if m and self.command == "GET":  # TF >= 2.20 asks this before renaming a folder
            return self._json(
                {
                    "kind": "storage#storageLayout",
                    "bucket": m.group(1),
                    "location": "US",
                    "locationType": "multi-region",
                    "hierarchicalNamespace": {"enabled": False},
                }
            )
        headers = {
            k: v
            for k, v in self.headers.items()
            if k.lower()
            not in ("transfer-encoding", "connection", "proxy-connection", "content-length")
        }
        headers["Content-Length"] = str(len(body))
        up = http.client.HTTPConnection(*self.upstream, timeout=300)
        up.request(self.command, path, body=body, headers=headers)
        resp = up.getresponse()
        data = resp.read()
        up.close()
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() in ("transfer-encoding", "connection", "content-length", "server", "date"):
                continue
            if (
                k.lower() == "location"
                and v.startswith("http://")
                and ".googleapis.com" in v.split("/")[2]
            ):
                v = "https://" + v[len("http://") :]  # the emulator builds it from Host, as http
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _forward


def _patch_emulator():
    """gcp-storage-emulator 2026.7.19: an uploadType=media POST with an empty body (TF's
    directory markers, `tf.io.gfile.makedirs`) fails with TypeError len(None)."""
    from gcp_storage_emulator.handlers import objects

    original = objects._media_upload

    def _media_upload(request, response, storage):
        if request.data is None:
            request._data = b""
        return original(request, response, storage)

    objects._media_upload = _media_upload


def _serve(bucket):
    import logging

    logging.getLogger("gcp_storage_emulator").setLevel(logging.ERROR)
    from gcp_storage_emulator.server import create_server

    _patch_emulator()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket)
    server.start()
    folder = tempfile.mkdtemp(prefix="gcs-emulator-")
    paths = _make_certs(folder)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(paths["leaf.pem"], paths["leaf.key"])
    handler = type("Proxy", (_Proxy,), {"upstream": ("127.0.0.1", port), "tls": ctx})
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    proxy.daemon_threads = True
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    sa = _fake_service_account(
        os.path.join(folder, "adc.json"), f"http://127.0.0.1:{proxy.server_address[1]}/token"
    )
    print(
        json.dumps(
            {"port": port, "proxy_port": proxy.server_address[1], "ca": paths["ca.pem"], "adc": sa}
        ),
        flush=True,
    )
    sys.stdin.read()  # until the parent closes our stdin (or dies)
    proxy.shutdown()
    server.stop()


def _fake_service_account(path, token_uri):
    """A service-account key no Google service knows. google-auth (Beam, google-cloud-storage)
    gets its token from `token_uri` (the proxy); google-cloud-cpp (pyarrow) signs a JWT itself."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    with open(path, "w") as f:
        json.dump(
            {
                "type": "service_account",
                "project_id": "test-project",
                "private_key_id": "0" * 40,
                "private_key": pem,
                "client_email": "test@test-project.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": token_uri,
            },
            f,
        )
    return path


# ---------------------------------------------------------------- test process side
class GcsEmulator:
    """The emulator with `bucket`, in a child process until `stop()` (or the with block's end);
    `env()` is the environment that points every client at it."""

    def __init__(self, bucket="test-bucket"):
        # A child process: some TF calls (tf.io.TFRecordWriter) hold the GIL during HTTP and
        # would deadlock an emulator served by a thread of the test process.
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.gcs_emulator", bucket],
            cwd=root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        info = json.loads(self.proc.stdout.readline())
        self.port, self.proxy_port, self.ca, self.adc = (
            info["port"],
            info["proxy_port"],
            info["ca"],
            info["adc"],
        )
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def env(self):
        proxy = f"http://127.0.0.1:{self.proxy_port}"
        local = "127.0.0.1,localhost"
        return {
            "STORAGE_EMULATOR_HOST": self.endpoint,  # google-cloud-storage, Beam's gcsio
            "CLOUD_STORAGE_EMULATOR_ENDPOINT": self.endpoint,  # google-cloud-cpp inside pyarrow
            "GOOGLE_APPLICATION_CREDENTIALS": self.adc,  # offline ADC for Beam and pyarrow
            "https_proxy": proxy,
            "HTTPS_PROXY": proxy,  # TF's libcurl -> the proxy
            "no_proxy": local,
            "NO_PROXY": local,
            "CURL_CA_BUNDLE": self.ca,  # TF trusts the proxy's certificate
            "REQUESTS_CA_BUNDLE": self.ca,  # google-auth's side lookups too
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator-token",  # TF: no credential lookup at all
            "NO_GCE_CHECK": "true",  # never probe the metadata server
        }

    def stop(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


if __name__ == "__main__":
    _serve(sys.argv[1])
