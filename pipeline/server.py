"""A team tracking server: a real `mlflow server`, safe by default.

    make mlflow-server                                   # http://127.0.0.1:5000, sqlite store, ./mlartifacts
    make mlflow-server HOST=0.0.0.0 AUTH=1               # reachable by the team, with MLflow's basic-auth app
    python -m pipeline.server --backend-store-uri postgresql://mlflow@db/mlflow --artifacts-destination s3://bucket

Training reaches it with `--tracking-uri http://HOST:5000` (or MLFLOW_TRACKING_URI). The server listens on
127.0.0.1 unless told otherwise, and refuses to listen beyond loopback without authentication. With
authentication the admin password comes from MLflow's own variable MLFLOW_AUTH_ADMIN_PASSWORD (or the
`admin_password` of the file MLFLOW_AUTH_CONFIG_PATH names), never from a flag that would land in shell
history; beyond loopback a missing, short or well-known password is refused until it is changed. Clients log
in with MLflow's MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD.
"""
from __future__ import annotations

import argparse
import configparser
import ipaddress
import os
import shutil
import sys
from pathlib import Path

from pipeline import cli
from pipeline.errors import ConfigError

# Passwords that must not guard a server others can reach (MLflow's historical default among them).
WELL_KNOWN = {"password", "password1234", "admin", "mlflow", "changeme", "12345678"}
MIN_PASSWORD = 12


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
    if password.lower() in WELL_KNOWN or len(password) < MIN_PASSWORD:
        raise ConfigError(f"the admin password is a well-known or short one (under {MIN_PASSWORD} characters); "
                          "choose another in MLFLOW_AUTH_ADMIN_PASSWORD before listening beyond loopback")


def command(args: argparse.Namespace) -> list[str]:
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    if mlflow is None:
        raise ConfigError("the mlflow command is not installed here; run `make setup` first")
    cmd = [mlflow, "server", "--host", args.host, "--port", str(args.port), "--workers", str(args.workers),
           "--backend-store-uri", args.backend_store_uri, "--artifacts-destination", args.artifacts_destination]
    if args.auth:
        cmd += ["--app-name", "basic-auth"]
    return cmd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--backend-store-uri", default="sqlite:///mlflow-server.db",
                        help="any SQLAlchemy URI, e.g. postgresql://user@host/db (password via ~/.pgpass)")
    parser.add_argument("--artifacts-destination", default="./mlartifacts")
    parser.add_argument("--auth", action="store_true", help="serve MLflow's basic-auth app")
    args = parser.parse_args(argv)

    def body() -> int:
        check(args.host, args.auth)
        cmd = command(args)
        print(f"mlflow server on http://{args.host}:{args.port} (store {args.backend_store_uri}, artefacts "
              f"{args.artifacts_destination}{', basic auth' if args.auth else ''}); training: "
              f"--tracking-uri http://{args.host}:{args.port}", flush=True)
        os.execv(cmd[0], cmd)  # the server takes this process's place: stop it by this PID
        return 0

    return cli.guarded(body)


if __name__ == "__main__":
    sys.exit(main())
