"""A team tracking server: a real `mlflow server`, safe by default.

    make mlflow-server                                   # http://127.0.0.1:5000, sqlite store, ./mlartifacts
    make mlflow-server HOST=0.0.0.0 AUTH=1               # reachable by the team, with MLflow's basic-auth app
    python -m pipeline.server --backend-store-uri postgresql://mlflow@db/mlflow --artifacts-destination s3://bucket

Training reaches it with `--tracking-uri http://HOST:5000` (or MLFLOW_TRACKING_URI). The server listens on
127.0.0.1 unless told otherwise, and refuses to listen beyond loopback without authentication. With
authentication the admin password comes from MLflow's own variable MLFLOW_AUTH_ADMIN_PASSWORD (or the
`admin_password` of the file MLFLOW_AUTH_CONFIG_PATH names), never from a flag that would land in shell
history; beyond loopback a weak one (see `password_problem`) is refused until it is changed. Clients log in with
MLflow's MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD. A store URI with a password in it belongs in
MLFLOW_BACKEND_STORE_URI (MLflow's own variable), not on a command line: the server reads it from there, hands it
to `mlflow server` through the environment (never its argv, which `ps` shows), and prints it masked.
"""
from __future__ import annotations

import argparse
import configparser
import ipaddress
import math
import os
import re
import shutil
import sys
from pathlib import Path

from pipeline import cli
from pipeline.errors import ConfigError

# Passwords that must not guard a server others can reach (MLflow's historical default among them).
WELL_KNOWN = {"password", "password1234", "admin", "mlflow", "changeme", "12345678", "123456789012", "qwertyuiop",
              "letmein", "welcome", "iloveyou", "passw0rd", "administrator", "mlflowmlflow", "secret"}
MIN_PASSWORD = 12
MIN_BITS = 50   # length x log2(size of the character classes used), over the distinct characters' share


def password_problem(password: str) -> str | None:
    """Why `password` is too weak to guard a server others can reach, or None. The estimate: each character
    is worth log2 of the alphabet its classes span (lower 26, upper 26, digits 10, other printable 33), and
    repeats are counted once per distinct character beyond the first few, so 'aaaaaaaaaaaa' and twelve spaces
    score near zero. At least MIN_PASSWORD characters and MIN_BITS bits."""
    if not password.strip():
        return "it is empty or only whitespace"
    lowered = password.lower()
    if lowered in WELL_KNOWN or lowered.rstrip("0123456789!") in WELL_KNOWN:
        return "it is a well-known password"
    if len(password) < MIN_PASSWORD:
        return f"it is shorter than {MIN_PASSWORD} characters"
    alphabet = sum(size for pattern, size in ((r"[a-z]", 26), (r"[A-Z]", 26), (r"[0-9]", 10), (r"[^a-zA-Z0-9]", 33))
                   if re.search(pattern, password))
    distinct = len(set(password))
    bits = min(len(password), 2 * distinct) * math.log2(max(alphabet, 2)) if distinct > 1 else 0.0
    if bits < MIN_BITS:
        return f"it is too guessable (about {bits:.0f} bits; at least {MIN_BITS} needed: longer, more varied)"
    return None


def masked(uri: str) -> str:
    """`postgresql://user:secret@db/mlflow` -> `postgresql://user:***@db/mlflow` (for printing only)."""
    return re.sub(r"(://[^/:@]*):[^/@]*@", r"\1:***@", uri)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve beyond this machine


def admin_password() -> str | None:
    """The basic-auth app's admin password, where MLflow itself reads it."""
    if os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD"):
        return os.environ["MLFLOW_AUTH_ADMIN_PASSWORD"]
    path = os.environ.get("MLFLOW_AUTH_CONFIG_PATH")
    if path and Path(path).is_file():
        parser = configparser.ConfigParser()
        parser.read(path)
        return parser.get("mlflow", "admin_password", fallback=None) or None
    return None


def check(host: str, auth: bool) -> None:
    """Refuse what would expose the team's runs: no auth beyond loopback, or a weak admin password there."""
    if is_loopback(host):
        return
    if not auth:
        raise ConfigError(f"refusing to listen on {host} without authentication: anyone who can reach it could "
                          "read and delete the team's runs; add AUTH=1 (MLflow's basic-auth app, with "
                          "MLFLOW_AUTH_ADMIN_PASSWORD set) or keep HOST=127.0.0.1")
    password = admin_password()
    if password is None:
        raise ConfigError("AUTH=1 beyond loopback needs an admin password: export MLFLOW_AUTH_ADMIN_PASSWORD "
                          "(or set admin_password in the file MLFLOW_AUTH_CONFIG_PATH names) before starting")
    problem = password_problem(password)
    if problem:
        raise ConfigError(f"the admin password is weak: {problem}; choose another in MLFLOW_AUTH_ADMIN_PASSWORD "
                          "before listening beyond loopback")


def command(args: argparse.Namespace) -> list[str]:
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    if mlflow is None:
        raise ConfigError("the mlflow command is not installed here; run `make setup` first")
    # the store URI travels in MLFLOW_BACKEND_STORE_URI (see `environment`): it may hold a password
    cmd = [mlflow, "server", "--host", args.host, "--port", str(args.port), "--workers", str(args.workers),
           "--artifacts-destination", args.artifacts_destination]
    if args.auth:
        cmd += ["--app-name", "basic-auth"]
    return cmd


def environment(args: argparse.Namespace) -> dict[str, str]:
    """The server's environment: this one, plus the store URI where `mlflow server` reads it, and for the
    basic-auth app the CSRF secret MLflow requires: a fresh random one unless MLFLOW_FLASK_SERVER_SECRET_KEY is
    set (every worker of this server inherits the same one; several servers behind one name need a shared one)."""
    import secrets

    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": args.backend_store_uri}
    if getattr(args, "auth", False):
        env.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", secrets.token_hex(32))
    return env


def check_auth_app(auth: bool) -> None:
    """MLflow's basic-auth app needs Flask-WTF (the mlflow[auth] extra): say so now, not after 20 s of start-up."""
    if not auth:
        return
    import importlib.util

    if importlib.util.find_spec("flask_wtf") is None:
        raise ConfigError("--auth needs MLflow's auth extra (Flask-WTF), which is not installed here; "
                          "run `make setup` (or pip install 'mlflow[auth]')")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                        "only; anything else needs --auth)")
    parser.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes (default 1)")
    parser.add_argument("--backend-store-uri",
                        default=os.environ.get("MLFLOW_BACKEND_STORE_URI", "sqlite:///mlflow-server.db"),
                        help="any SQLAlchemy URI, e.g. postgresql://user@host/db (default $MLFLOW_BACKEND_STORE_URI, "
                             "else sqlite:///mlflow-server.db); one with a password goes in that variable instead")
    parser.add_argument("--artifacts-destination", default="./mlartifacts",
                        help="where run artefacts are stored (default ./mlartifacts)")
    parser.add_argument("--auth", action="store_true", help="serve MLflow's basic-auth app (needs "
                        "MLFLOW_AUTH_ADMIN_PASSWORD beyond loopback)")
    args = parser.parse_args(argv)

    def body() -> int:
        check(args.host, args.auth)
        check_auth_app(args.auth)
        cmd = command(args)
        print(f"mlflow server on http://{args.host}:{args.port} (store {masked(args.backend_store_uri)}, artefacts "
              f"{args.artifacts_destination}{', basic auth' if args.auth else ''}); training: "
              f"--tracking-uri http://{args.host}:{args.port}", flush=True)
        os.execve(cmd[0], cmd, environment(args))  # the server takes this process's place: stop it by this PID
        return 0

    return cli.guarded(body)


if __name__ == "__main__":
    sys.exit(main())
