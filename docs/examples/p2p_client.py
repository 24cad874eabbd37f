#!/usr/bin/env python3
"""A p2p-transfer client in Python, written from docs/PROTOCOL.md alone (protocol version 4).

It shows the transport recipe of PROTOCOL.md §2.6 at work: TLS 1.3 with Python's `ssl` module,
a self-signed Ed25519 certificate made with `cryptography`, and the node-id check that replaces
certificate-authority verification. Then it speaks the protocol: MessagePack frames (§2, §3)
through the `msgpack` package.

    pip install cryptography msgpack
    python3 p2p_client.py INDEX_ADDR [--index-node-id ID] [--fetch FILE_ID [--out DIR]]

Without --fetch it prints the index's node id and the peers it knows. With --fetch it looks the
file up, checks the manifest against its id (§6.2), and downloads it chunk by chunk from the
hosts the index names, refusing any host whose TLS handshake shows another node id than the
index recorded for it (§8.3), and checking every chunk's SHA-256. A file the index knows only
inside a folder (`FoundInFolder`, §7.5) is fetched the same way, its manifest asked of the
folder's hosts (`GetManifest`) and checked against the id; a folder id is only described
(fetching a whole folder, §13.4, is left out of this example).

This is an example, not a second reference implementation: one connection at a time, no
retries, no resume.
"""

import argparse
import datetime
import hashlib
import ipaddress
import os
import socket
import ssl
import struct
import sys
import tempfile

import msgpack
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

PROTOCOL_VERSION = 4
ALPN = "p2p-transfer"
CHUNK_SIZE = 4 * 1024 * 1024
MAX_FRAME_LEN = 2 * 1024 * 1024  # MAX_CONTROL_FRAME_LEN: the largest reply frame (§2.1)
# §2.4: every Ed25519 SubjectPublicKeyInfo is these 12 bytes, then the 32-byte key.
ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


# --- Node ids (§2.5) -------------------------------------------------------------------------

def check_char(chars):
    """Luhn mod 32 check character of base32 text."""
    factor, total = 2, 0
    for c in reversed(chars):
        addend = factor * ALPHABET.index(c)
        factor = 1 if factor == 2 else 2
        total += addend // 32 + addend % 32
    return ALPHABET[(32 - total % 32) % 32]


def node_id_text(node_id):
    """The 20 bytes of a node id as it is shown: 33 characters in groups of 4, the last of 5."""
    bits = int.from_bytes(node_id, "big")
    chars = "".join(ALPHABET[(bits >> (155 - 5 * i)) & 31] for i in range(32))
    chars += check_char(chars)
    return "-".join([chars[i:i + 4] for i in range(0, 28, 4)] + [chars[28:]])


def parse_node_id(text):
    chars = "".join(c for c in text if c != "-" and not c.isspace()).upper()
    if len(chars) != 33 or any(c not in ALPHABET for c in chars):
        raise ValueError(f"{text!r} is not a node id")
    if check_char(chars[:32]) != chars[32]:
        raise ValueError(f"{text!r}: the check character does not match")
    bits = 0
    for c in chars[:32]:
        bits = (bits << 5) | ALPHABET.index(c)
    return bits.to_bytes(20, "big")


def node_id_of_certificate(der):
    """The node id a certificate (DER) proves, after the checks of §2.4 (items 1-4) that
    the TLS library skipped because CERT_NONE is set. The TLS handshake itself has already
    proven that the other side holds the private key of the certificate's public key."""
    cert = x509.load_der_x509_certificate(der)
    if cert.version != x509.Version.v3:
        raise ValueError("not an X.509 version 3 certificate")
    key = cert.public_key()
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ValueError("the certificate's key is not an Ed25519 key")
    spki = key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)
    assert spki == ED25519_SPKI_PREFIX + key.public_bytes(serialization.Encoding.Raw,
                                                          serialization.PublicFormat.Raw)
    if cert.issuer != cert.subject:
        raise ValueError("the certificate is not self-signed")
    key.verify(cert.signature, cert.tbs_certificate_bytes)  # signed by its own key
    now = datetime.datetime.now(datetime.timezone.utc)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise ValueError("the certificate is not valid now")
    return hashlib.sha256(spki).digest()[:20]


# --- Transport (§2.3, §2.6) ---------------------------------------------------------------

def make_identity(folder):
    """A new Ed25519 key and a self-signed certificate for it, as PEM files in `folder`.
    A real client keeps its key: its node id is its name to others."""
    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "python example")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)          # self-signed: issuer = subject
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("p2p-transfer")]),
                           critical=False)
            .sign(key, None))                              # Ed25519 takes no hash algorithm
    cert_path, key_path = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    return cert_path, key_path, hashlib.sha256(spki).digest()[:20]


def tls_context(cert_path, key_path):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    # No certificate authority vouches for a node; its node id does (checked after the
    # handshake). That, and only that, makes switching verification off safe.
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols([ALPN])
    ctx.load_cert_chain(cert_path, key_path)  # the server requires a client certificate
    return ctx


class Connection:
    """One conversation: TLS, then Hello / Welcome, then one reply per request."""

    def __init__(self, ctx, addr, role, expect=None, timeout=10.0):
        host, port = addr.rsplit(":", 1)
        host = host.strip("[]")
        raw = socket.create_connection((host, int(port)), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # No server_hostname: nodes are reached by address and SNI is not used.
        self.tls = ctx.wrap_socket(raw)
        if self.tls.selected_alpn_protocol() != ALPN:
            raise ConnectionError("the server did not agree on ALPN p2p-transfer")
        self.node_id = node_id_of_certificate(self.tls.getpeercert(binary_form=True))
        if expect is not None and self.node_id != expect:
            self.tls.close()
            raise ConnectionError(f"{addr} is {node_id_text(self.node_id)}, "
                                  f"not the expected {node_id_text(expect)}")
        welcome = self.request("Hello", version=PROTOCOL_VERSION)
        if welcome.get("Welcome") != {"version": PROTOCOL_VERSION, "role": role}:
            raise ConnectionError(f"unexpected answer to Hello: {welcome}")

    def read_exact(self, n):
        data = bytearray()
        while len(data) < n:
            part = self.tls.recv(min(n - len(data), 1 << 20))
            if not part:
                raise ConnectionError("connection closed")
            data += part
        return bytes(data)

    def send(self, name, **fields):
        body = msgpack.packb({name: fields}, use_bin_type=True)
        self.tls.sendall(struct.pack(">I", len(body)) + body)

    def recv(self):
        (length,) = struct.unpack(">I", self.read_exact(4))
        if length > MAX_FRAME_LEN:
            raise ConnectionError(f"frame of {length} bytes is over the limit")
        return msgpack.unpackb(self.read_exact(length), raw=False)

    def request(self, name, **fields):
        self.send(name, **fields)
        return self.recv()

    def close(self):
        self.tls.close()


# --- Manifests (§6) --------------------------------------------------------------------------

def file_id(manifest):
    name = manifest["name"].encode()
    canonical = (b"p2p-manifest-v2\x00" + struct.pack(">QIH", manifest["size"],
                                                      manifest["chunk_size"], len(name))
                 + name + struct.pack(">I", len(manifest["chunks"])) + b"".join(manifest["chunks"]))
    return hashlib.sha256(canonical).digest()


def folder_id(head):
    """The folder id of a FolderHead (§13.2)."""
    name = head["name"].encode()
    canonical = (b"p2p-folder-v1\x00\x00\x00" + struct.pack(">H", len(name)) + name
                 + struct.pack(">QQI", head["files"], head["size"], len(head["pages"]))
                 + b"".join(head["pages"]))
    return hashlib.sha256(canonical).digest()


def manifest_from_hosts(ctx, wanted_id, hosts):
    """A manifest that hashes to `wanted_id`, asked of each host in turn (§8.3)."""
    for host in hosts:
        try:
            peer = Connection(ctx, host["addr"], "peer", expect=host["node_id"])
            reply = peer.request("GetManifest", file_id=wanted_id)
            peer.close()
        except (OSError, ConnectionError, ValueError) as err:
            print(f"  {host['addr']}: {err}", file=sys.stderr)
            continue
        manifest = reply.get("Manifest", {}).get("manifest")
        if manifest is not None and file_id(manifest) == wanted_id:
            return manifest
        print(f"  {host['addr']}: no manifest for that id: {reply}", file=sys.stderr)
    raise SystemExit("no host gave a manifest that matches the id")


def fetch(ctx, index, wanted, out_dir):
    found = index.request("Lookup", id=wanted)
    if "FoundFolder" in found:
        folder = found["FoundFolder"]
        head = folder["head"]
        if folder_id(head) != folder["folder_id"] or not folder["folder_id"].hex().startswith(wanted):
            raise SystemExit("the index's folder head does not match the id")
        raise SystemExit(f"{folder['folder_id'].hex()} is the folder {head['name']!r} of "
                         f"{head['files']} files ({head['size']} bytes, {len(folder['hosts'])} "
                         "hosts); this example fetches single files only")
    if "FoundInFolder" in found:
        inside = found["FoundInFolder"]
        if not inside["file_id"].hex().startswith(wanted):
            raise SystemExit("the index answered for another id")
        print(f"{inside['file_id'].hex()} is {inside['path']} in folder {inside['folder_id'].hex()}")
        found = {"file_id": inside["file_id"], "hosts": inside["hosts"],
                 "manifest": manifest_from_hosts(ctx, inside["file_id"], inside["hosts"])}
    elif "Found" in found:
        found = found["Found"]
    else:
        raise SystemExit(f"lookup failed: {found}")
    manifest = found["manifest"]
    if file_id(manifest) != found["file_id"] or not found["file_id"].hex().startswith(wanted):
        raise SystemExit("the index's manifest does not match the id")
    name = manifest["name"]
    if name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise SystemExit(f"unsafe file name {name!r}")
    hosts = found["hosts"]
    if not hosts and manifest["chunks"]:
        raise SystemExit("no hosts")
    path = os.path.join(out_dir, name)
    with open(path + ".part", "wb") as out:
        for index_, expected in enumerate(manifest["chunks"]):
            want = min(CHUNK_SIZE, manifest["size"] - index_ * CHUNK_SIZE)
            for host in hosts:
                try:
                    peer = Connection(ctx, host["addr"], "peer", expect=host["node_id"])
                    reply = peer.request("GetChunk", file_id=found["file_id"], index=index_)
                    chunk = reply.get("Chunk")
                    if chunk is None:
                        print(f"  {host['addr']}: {reply}", file=sys.stderr)
                        continue
                    if chunk["size"] > CHUNK_SIZE:
                        raise ConnectionError("a chunk larger than CHUNK_SIZE")
                    # The data follows the frame at once, raw, `size` bytes.
                    data = peer.read_exact(chunk["size"])
                    peer.close()
                except (OSError, ConnectionError, ValueError) as err:
                    print(f"  {host['addr']}: {err}", file=sys.stderr)
                    continue
                if (chunk["file_id"], chunk["index"]) != (found["file_id"], index_) \
                        or len(data) != want or hashlib.sha256(data).digest() != expected:
                    print(f"  {host['addr']}: bad chunk {index_}", file=sys.stderr)
                    continue
                out.seek(index_ * CHUNK_SIZE)
                out.write(data)
                print(f"chunk {index_} from {host['addr']} ({node_id_text(host['node_id'])})")
                break
            else:
                raise SystemExit(f"no host delivered chunk {index_}")
        out.truncate(manifest["size"])
    if os.path.exists(path):
        raise SystemExit(f"{path} exists; the download stays in {path}.part")
    os.rename(path + ".part", path)
    print(f"downloaded {path} {found['file_id'].hex()}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("index", help="the index server's ip:port")
    parser.add_argument("--index-node-id", help="refuse an index with another node id")
    parser.add_argument("--fetch", metavar="FILE_ID", help="download this file (id or prefix)")
    parser.add_argument("--out", default=".", help="folder to download into")
    args = parser.parse_args()
    ipaddress.ip_address(args.index.rsplit(":", 1)[0].strip("[]"))  # an address, not a name

    with tempfile.TemporaryDirectory() as folder:
        cert_path, key_path, me = make_identity(folder)
        ctx = tls_context(cert_path, key_path)
        expect = parse_node_id(args.index_node_id) if args.index_node_id else None
        index = Connection(ctx, args.index, "index", expect=expect)
        print(f"this client is {node_id_text(me)}")
        print(f"index {args.index} is {node_id_text(index.node_id)}")
        if args.fetch:
            fetch(ctx, index, args.fetch.strip().lower(), args.out)
        else:
            peers = index.request("ListPeers")["Peers"]
            for p in peers["peers"]:
                print(f"peer {p['addr']} {node_id_text(p['node_id'])} files={p['files']}")
            print(f"{peers['total']} peers")
        index.close()


if __name__ == "__main__":
    try:
        main()
    except (OSError, ConnectionError, ValueError) as err:
        sys.exit(f"error: {err}")
