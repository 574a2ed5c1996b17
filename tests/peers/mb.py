#!/usr/bin/env python3
"""Runs Modbus operations with pymodbus (a client nobody here wrote) and
prints one JSON result per operation.

usage: mb.py PORT OPS_JSON
  With "tls": {"ca": F, "cert": F, "key": F, "max_version": "1.2"} in an op, the
  op runs over Modbus/TCP Security (pymodbus' ModbusTlsClient).
  An op "hold" reads once, prints its result, waits for a line on stdin, reads
  again on the same connection and prints that result.
  OPS_JSON: [{"source": "127.0.0.1", "unit": 1, "op": "read", "address": 3000, "count": 10}, ...]
  op: read | write1 | write | readwrite | mask | devid
result: {"ok": true, "registers": [...]} | {"ok": false, "exception": N} | {"ok": false, "error": "..."}
"""
import json
import sys

try:
    from pymodbus.client import ModbusTcpClient
except ImportError:
    sys.exit("pymodbus is missing: pip install 'pymodbus>=3.16,<3.17' (.ci/run does)")


def client_for(port, op):
    # retries=0: a client that resends on timeout would hide what the proxy does.
    tls = op.get("tls")
    if tls is None:
        return ModbusTcpClient("127.0.0.1", port=port, source_address=(op.get("source", "127.0.0.1"), 0), timeout=op.get("timeout", 3), retries=0)
    import ssl
    from pymodbus.client import ModbusTlsClient
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # The chain is still verified against the CA; pymodbus' sync client
    # passes no server name, so the name check is off.
    ctx.check_hostname = False
    ctx.load_verify_locations(tls["ca"])
    if tls.get("cert"):
        ctx.load_cert_chain(tls["cert"], tls["key"])
    if tls.get("max_version") == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ModbusTlsClient("127.0.0.1", port=port, sslctx=ctx, timeout=op.get("timeout", 3), retries=0)


def run(port, op, client=None):
    own = client is None
    if own:
        client = client_for(port, op)
        try:
            if not client.connect():
                return {"ok": False, "error": "connect failed"}
        except Exception as e:  # noqa: BLE001 - a refused handshake
            return {"ok": False, "error": f"{type(e).__name__}: {e}"}
    try:
        u = op.get("unit", 1)
        kind = op["op"]
        if kind == "read":
            r = client.read_holding_registers(op["address"], count=op.get("count", 1), device_id=u)
        elif kind == "write1":
            r = client.write_register(op["address"], op["value"], device_id=u)
        elif kind == "write":
            r = client.write_registers(op["address"], op["values"], device_id=u)
        elif kind == "readwrite":
            r = client.readwrite_registers(read_address=op["read_address"], read_count=op["read_count"], write_address=op["address"], values=op["values"], device_id=u)
        elif kind == "mask":
            r = client.mask_write_register(address=op["address"], and_mask=op.get("and", 0xFFFF), or_mask=op.get("or", 0), device_id=u)
        elif kind == "devid":
            r = client.read_device_information(read_code=1, object_id=0, device_id=u)
            if r.isError():
                return {"ok": False, "exception": getattr(r, "exception_code", None)}
            return {"ok": True, "objects": {str(k): v.decode() for k, v in r.information.items()}}
        else:
            return {"ok": False, "error": f"unknown op {kind}"}
        if r.isError():
            return {"ok": False, "exception": getattr(r, "exception_code", None)}
        return {"ok": True, "registers": list(getattr(r, "registers", []) or [])}
    except Exception as e:  # noqa: BLE001 - report any client-side failure
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}
    finally:
        if own:
            client.close()


def hold(port, op):
    client = client_for(port, op)
    if not client.connect():
        print(json.dumps({"ok": False, "error": "connect failed"}), flush=True)
        return
    first = dict(op, op="read")
    print(json.dumps(run(port, first, client)), flush=True)
    sys.stdin.readline()
    print(json.dumps(run(port, first, client)), flush=True)
    client.close()


def main():
    port = int(sys.argv[1])
    ops = json.loads(sys.argv[2])
    if len(ops) == 1 and ops[0]["op"] == "hold":
        hold(port, ops[0])
        return
    print(json.dumps([run(port, op) for op in ops]))


if __name__ == "__main__":
    main()
