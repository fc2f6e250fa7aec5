"""Redis set-ups beyond one plain server: replicas, sentinels, TLS, and a server stuck loading its data.

Every process is a ``ManagedProcess`` the caller stops by PID; everything binds 127.0.0.1.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bench.harness.processes import ManagedProcess, free_port, wait_until


@dataclass
class Server:
    """A redis-server (or redis-sentinel) process and its port."""

    proc: ManagedProcess
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed (.ci/run installs it)")
    return path


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start_server(log_dir: Path, *args: str, port: int | None = None, name: str = "redis", tls: bool = False) -> Server:
    """``redis-server`` on 127.0.0.1 with ``args`` appended (no persistence unless asked); returns once it
    listens. Its files live in ``log_dir/<name>-<port>``."""
    port = port or free_port()
    workdir = log_dir / f"{name}-{port}"
    workdir.mkdir(exist_ok=True)
    ports = ["--port", "0", "--tls-port", str(port)] if tls else ["--port", str(port)]
    argv = [_binary("redis-server"), *ports, "--bind", "127.0.0.1", "--dir", str(workdir)]
    argv += ["--save", "", "--appendonly", "no", *args]
    proc = ManagedProcess(name, argv, dict(os.environ), log_dir)
    wait_until(lambda: _alive_and(proc, lambda: _listening(port)), 10, f"{name} on port {port}")
    return Server(proc, port)


def _alive_and(proc: ManagedProcess, check: object) -> bool:
    if proc.proc.poll() is not None:
        raise RuntimeError(f"{proc.name} exited:\n{proc.output()[-3000:]}")
    return bool(check())  # type: ignore[operator]


def start_replica(log_dir: Path, primary: Server, via_port: int | None = None) -> Server:
    """A replica of ``primary`` (reached through ``via_port``, a proxy, if given), once its first sync is done.

    Syncs start at once: by default Redis waits 5 s for more replicas to share a diskless sync, which made
    every replica (and every replica of a promoted one) cost 5 s of set-up."""
    upstream = str(via_port or primary.port)
    with primary.client() as admin:
        admin.config_set("repl-diskless-sync-delay", 0)
    replica = start_server(
        log_dir, "--replicaof", "127.0.0.1", upstream, "--repl-diskless-sync-delay", "0", name="replica"
    )
    client = replica.client()
    wait_until(lambda: client.info("replication")["master_link_status"] == "up", 20, "the replica to sync")
    client.close()
    return replica


def start_sentinels(
    log_dir: Path,
    primary: Server,
    count: int = 3,
    master: str = "relay",
    down_after_ms: int = 1000,
    via_port: int | None = None,
) -> list[Server]:
    """``count`` redis-sentinel processes monitoring ``primary`` (at ``via_port``, a proxy, if given) as
    ``master``, with a majority as quorum."""
    quorum = count // 2 + 1
    sentinels = []
    for _ in range(count):
        port = free_port()
        conf = log_dir / f"sentinel-{port}.conf"  # sentinel rewrites its config file: one each
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {log_dir}\n"
            f"sentinel monitor {master} 127.0.0.1 {via_port or primary.port} {quorum}\n"
            f"sentinel down-after-milliseconds {master} {down_after_ms}\n"
            f"sentinel failover-timeout {master} 10000\n"
            f"sentinel parallel-syncs {master} 1\n"
        )
        proc = ManagedProcess("sentinel", [_binary("redis-sentinel"), str(conf)], dict(os.environ), log_dir)
        wait_until(lambda p=proc, n=port: _alive_and(p, lambda: _listening(n)), 10, "a sentinel")  # type: ignore[misc]
        sentinels.append(Server(proc, port))
    return sentinels


def sentinels_agree(sentinels: list[Server], master: str, replicas: int) -> bool:
    """Every sentinel knows the others and ``replicas`` replicas: a failover can be decided."""
    for sentinel in sentinels:
        client = sentinel.client()
        try:
            state = client.sentinel_master(master)
        except redis.RedisError:
            return False
        finally:
            client.close()
        if int(state["num-other-sentinels"]) < len(sentinels) - 1 or int(state["num-slaves"]) < replicas:
            return False
    return True


# --- TLS ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    """A throwaway CA, a server certificate it signed, and an unrelated CA."""

    ca: Path
    cert: Path
    key: Path
    other_ca: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def _ca(name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )  # digital_signature, key_cert_sign, crl_sign
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_tls_files(directory: Path, names: list[str], client_too: bool = False) -> TlsFiles:
    """A CA and a server certificate for ``names`` (IP addresses or DNS names), plus an unrelated CA. With
    ``client_too`` the certificate serves as a client's too (cluster nodes present it to each other)."""
    ca_cert, ca_key = _ca("Relay test CA")
    other_cert, _ = _ca("Some other CA")
    key = _key()
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    usages = [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]
    usages += [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH] if client_too else []
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key", directory / "other.pem")
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.other_ca.write_bytes(other_cert.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, files.key)
    return files


def start_tls_server(log_dir: Path, files: TlsFiles) -> Server:
    """redis-server speaking only TLS (its plain port is off), without client certificates."""
    args = ["--tls-cert-file", str(files.cert), "--tls-key-file", str(files.key), "--tls-ca-cert-file", str(files.ca)]
    return start_server(log_dir, *args, "--tls-auth-clients", "no", name="tls-redis", tls=True)


@dataclass
class Cluster:
    """A Redis Cluster of local servers (primaries first, then their replicas), over TLS and with a password if
    it was started so."""

    servers: list[Server]
    tls: TlsFiles | None = None
    password: str = ""

    @property
    def url(self) -> str:
        """One node's URL: what ``RELAY_REDIS_URL`` names (the client discovers the rest)."""
        scheme = "rediss" if self.tls else "redis"
        auth = f":{self.password}@" if self.password else ""
        return f"{scheme}://{auth}127.0.0.1:{self.servers[0].port}/0"

    def node_client(self, server: Server) -> redis.Redis:
        """A plain client of one node (for its CLUSTER INFO)."""
        tls = {"ssl": True, "ssl_ca_certs": str(self.tls.ca)} if self.tls else {}
        return redis.Redis(port=server.port, password=self.password or None, socket_timeout=5, **tls)

    def ok(self) -> bool:
        """Every node says ``cluster_state:ok``."""
        for server in self.servers:
            with self.node_client(server) as client:
                info = client.execute_command("CLUSTER", "INFO")
                text = info.decode() if isinstance(info, bytes) else str(info)
                if "cluster_state:ok" not in text:
                    return False
        return True

    def stop(self) -> None:
        """Stop every node by its PID."""
        for server in self.servers:
            server.proc.stop()


def start_cluster(
    log_dir: Path,
    primaries: int = 3,
    replicas: int = 1,
    tls: TlsFiles | None = None,
    password: str = "",
    node_timeout_ms: int = 2000,
) -> Cluster:
    """``primaries * (1 + replicas)`` ``redis-server --cluster-enabled yes`` on free ports (TLS only, for clients,
    the cluster bus and replication, with ``tls``; ``requirepass`` with ``password``), joined with ``redis-cli
    --cluster create``; returns once every node says ``cluster_state:ok``. A failure stops what was started.
    ``node_timeout_ms``: how long a node may not answer before it is failed over (``cluster-node-timeout``)."""
    cluster = Cluster([], tls, password)
    args = ["--cluster-enabled", "yes", "--cluster-node-timeout", str(node_timeout_ms)]
    cli = [_binary("redis-cli")]
    if tls:
        args += ["--tls-cert-file", str(tls.cert), "--tls-key-file", str(tls.key), "--tls-ca-cert-file", str(tls.ca)]
        args += ["--tls-auth-clients", "no", "--tls-cluster", "yes", "--tls-replication", "yes"]
        cli += ["--tls", "--cacert", str(tls.ca)]
    if password:
        args += ["--requirepass", password, "--masterauth", password]
        cli += ["-a", password, "--no-auth-warning"]
    try:
        for _ in range(primaries * (1 + replicas)):
            port = free_port()
            config = ["--cluster-config-file", str(log_dir / f"cluster-{port}" / "nodes.conf")]
            config += ["--cluster-port", str(free_port())]  # the bus: not port + 10000, outside this run's block
            cluster.servers.append(start_server(log_dir, *args, *config, port=port, name="cluster", tls=bool(tls)))
        nodes = [f"127.0.0.1:{s.port}" for s in cluster.servers]
        argv = [*cli, "--cluster", "create", *nodes, "--cluster-replicas", str(replicas), "--cluster-yes"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{done.stdout}\n{done.stderr}")
        wait_until(cluster.ok, 30, "the cluster to report cluster_state:ok")
    except BaseException:
        cluster.stop()
        raise
    return cluster
