"""Third-party gRPC client for the Switchyard API: stubs generated with
grpcio-tools from the repository's .proto at run time.

usage: grpc_client.py ADDR ADMIN_TOKEN setup HOSTNAME UPSTREAM
         creates tunnel `ws` (token_auth) and a token scoped to it;
         prints {"secret": ..., "token_id": ..., "tunnel_id": ...}
       grpc_client.py ADDR ADMIN_TOKEN errors
         bad input; prints {"case": "STATUS_CODE message", ...}
       grpc_client.py ADDR ADMIN_TOKEN revoke TOKEN_ID
"""
import importlib
import json
import os
import sys
import tempfile

import grpc
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.join(HERE, "..", "..", "proto")


def stubs():
    out = tempfile.mkdtemp(prefix="sy-stubs-")
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    rc = protoc.main([
        "protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={out}",
        f"--grpc_python_out={out}", "switchyard/v1/switchyard.proto",
    ])
    if rc != 0:
        sys.exit(f"protoc failed: {rc}")
    sys.path.insert(0, out)
    pb = importlib.import_module("switchyard.v1.switchyard_pb2")
    rpc = importlib.import_module("switchyard.v1.switchyard_pb2_grpc")
    return pb, rpc


def main():
    addr, token, cmd = sys.argv[1], sys.argv[2], sys.argv[3]
    pb, rpc = stubs()
    ch = grpc.insecure_channel(addr)
    grpc.channel_ready_future(ch).result(timeout=10)
    auth = [("authorization", f"Bearer {token}")]
    tunnels = rpc.TunnelsStub(ch)
    tokens = rpc.TokensStub(ch)
    if cmd == "setup":
        host, upstream = sys.argv[4], sys.argv[5]
        t = tunnels.CreateTunnel(pb.CreateTunnelRequest(tunnel=pb.Tunnel(
            name="ws", hostnames=[host], upstream=upstream, mode=pb.MODE_HTTP,
            http_version=pb.HTTP_VERSION_HTTP1, token_auth=True,
            labels={"team": "edge"})), metadata=auth, timeout=10)
        r = tokens.CreateToken(pb.CreateTokenRequest(name="ci", tunnels=["ws"]),
                               metadata=auth, timeout=10)
        print(json.dumps({"secret": r.secret, "token_id": r.token.id, "tunnel_id": t.id}))
        return
    if cmd == "revoke":
        tokens.RevokeToken(pb.RevokeTokenRequest(id=sys.argv[4]), metadata=auth, timeout=10)
        print(json.dumps({"revoked": sys.argv[4]}))
        return
    if cmd == "errors":
        out = {}

        def call(name, fn, req, md=auth):
            try:
                fn(req, metadata=md, timeout=10)
                out[name] = "OK"
            except grpc.RpcError as e:
                out[name] = f"{e.code().name} {e.details()}"

        good = dict(name="e1", hostnames=["e1.test"], upstream="127.0.0.1:1")
        call("bad_upstream", tunnels.CreateTunnel, pb.CreateTunnelRequest(
            tunnel=pb.Tunnel(**{**good, "upstream": "no-port"})))
        call("bad_name", tunnels.CreateTunnel, pb.CreateTunnelRequest(
            tunnel=pb.Tunnel(**{**good, "name": "has space"})))
        call("bad_cidr", tunnels.CreateTunnel, pb.CreateTunnelRequest(
            tunnel=pb.Tunnel(**good, trusted_cidrs=["10.0.0.0/99"])))
        call("bad_http_version", tunnels.CreateTunnel, pb.CreateTunnelRequest(
            tunnel=pb.Tunnel(**good, http_version=9)))
        call("tls_on_h1_upstream", tunnels.CreateTunnel, pb.CreateTunnelRequest(
            tunnel=pb.Tunnel(**good, upstream_tls=pb.UpstreamTls(server_name="origin.internal"))))
        call("insecure_with_server_name", tunnels.CreateTunnel, pb.CreateTunnelRequest(
            tunnel=pb.Tunnel(**good, http_version=pb.HTTP_VERSION_H3,
                             upstream_tls=pb.UpstreamTls(server_name="o.internal", insecure=True))))
        pem = "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"
        call("h3_tunnel_ok", tunnels.CreateTunnel, pb.CreateTunnelRequest(
            tunnel=pb.Tunnel(name="h3t", hostnames=["h3t.test"], upstream="127.0.0.1:1",
                             http_version=pb.HTTP_VERSION_H3,
                             upstream_tls=pb.UpstreamTls(ca_pem=pem, server_name="origin.internal"))))
        try:
            t = tunnels.GetTunnel(pb.GetTunnelRequest(name="h3t"), metadata=auth, timeout=10)
            out["h3_tunnel_read_back"] = f"{pb.HttpVersion.Name(t.http_version)} {t.upstream_tls.server_name} ca={t.upstream_tls.ca_pem == pem}"
        except grpc.RpcError as e:
            out["h3_tunnel_read_back"] = f"{e.code().name} {e.details()}"
        call("duplicate_name", tunnels.CreateTunnel, pb.CreateTunnelRequest(
            tunnel=pb.Tunnel(**{**good, "name": "ws", "hostnames": ["other.test"]})))
        call("duplicate_hostname", tunnels.CreateTunnel, pb.CreateTunnelRequest(
            tunnel=pb.Tunnel(**{**good, "name": "e2", "hostnames": [sys.argv[4]]})))
        call("unknown_id", tunnels.GetTunnel, pb.GetTunnelRequest(id="tun_nope"))
        call("unknown_delete", tunnels.DeleteTunnel, pb.DeleteTunnelRequest(name="nope"))
        call("unknown_revoke", tokens.RevokeToken, pb.RevokeTokenRequest(id="tok_nope"))
        call("token_unknown_scope", tokens.CreateToken, pb.CreateTokenRequest(tunnels=["nope"]))
        call("missing_admin_token", tunnels.ListTunnels, pb.ListTunnelsRequest(), md=[])
        call("wrong_admin_token", tunnels.ListTunnels, pb.ListTunnelsRequest(),
             md=[("authorization", "Bearer wrong")])
        call("list_ok", tunnels.ListTunnels, pb.ListTunnelsRequest())
        print(json.dumps(out))
        return
    sys.exit(f"unknown command {cmd}")


main()
