#!/usr/bin/env python3
"""A mock of Google's Compute Engine REST API (v1), the OAuth token endpoint
and Cloud Resource Manager's getEffectiveOrgPolicy, on 127.0.0.1, for
running the real `gcloud` in kctl's tests. Python 3 standard library only.
See README.md next to this file.

    python3 compute_api.py --state-dir DIR

binds 127.0.0.1 on a free port, prints the port as the first line of
stdout, logs every request as one JSON line to DIR/requests.jsonl, keeps
all state in memory and stops on SIGTERM.
"""

import argparse
import base64
import copy
import email.parser
import email.policy
import hashlib
import ipaddress
import itertools
import json
import os
import re
import secrets
import signal
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ZONES = [
    "us-central1-a", "us-central1-b", "us-central1-c", "us-central1-f",
    "us-east1-b", "us-east1-c", "us-east1-d", "us-west1-a", "us-west1-b",
    "europe-west1-b", "europe-west1-c", "europe-west1-d", "europe-west4-a",
    "asia-east1-a",
]
REGIONS = sorted({z.rsplit("-", 1)[0] for z in ZONES})
# name: (guestCpus, memoryMb, isSharedCpu, description)
MACHINE_TYPES = {
    "f1-micro": (1, 614, True, "1 vCPU (shared physical core) and 0.6 GB RAM"),
    "g1-small": (1, 1740, True, "1 vCPU (shared physical core) and 1.7 GB RAM"),
    "e2-micro": (2, 1024, True, "Efficient Instance, 2 vCPU (1/8 shared physical core) and 1 GB RAM"),
    "e2-small": (2, 2048, True, "Efficient Instance, 2 vCPU (1/4 shared physical core) and 2 GB RAM"),
    "n1-standard-1": (1, 3840, False, "1 vCPU, 3.75 GB RAM"),
}
IMAGES = {  # (project, family): image name
    ("debian-cloud", "debian-12"): "debian-12-bookworm-v20260310",
    ("debian-cloud", "debian-11"): "debian-11-bullseye-v20260310",
}
DISK_TYPES = ("pd-standard", "pd-balanced", "pd-ssd")
GLOBAL_QUOTAS = {"NETWORKS": 15, "FIREWALLS": 200, "ROUTES": 250, "SUBNETWORKS": 175}
REGION_QUOTAS = {"CPUS": 24.0, "INSTANCES": 24.0, "IN_USE_ADDRESSES": 8.0,
                 "DISKS_TOTAL_GB": 4096.0}
ORG_CONSTRAINTS = ("compute.requireOsLogin", "compute.disableGuestAttributesAccess")
RFC1035 = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
HOSTKEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa")


class ApiError(Exception):
    """An error answered as Google's JSON error body."""

    def __init__(self, code, reason, message, domain="global", status=None):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.domain, self.status = domain, status

    def body(self):
        err = {"code": self.code, "message": self.message,
               "errors": [{"message": self.message, "domain": self.domain,
                           "reason": self.reason}]}
        if self.status:
            err["status"] = self.status
        return {"error": err}


def not_found(path, what=None):
    if what:
        return ApiError(404, "notFound", "The resource '%s' of type '%s' was not found." % (path, what))
    return ApiError(404, "notFound", "The resource '%s' was not found" % path)


def invalid(field, value, why):
    return ApiError(400, "invalid", "Invalid value for field '%s': '%s'. %s" % (field, value, why))


def now():
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03d-07:00" % (int(t * 1000) % 1000)


def last(url):
    return url.rstrip("/").rsplit("/", 1)[-1] if url else url


def ssh_string(b):
    return len(b).to_bytes(4, "big") + b


def generated_hostkeys(name):
    """Well-formed public key blobs (ed25519 and ecdsa), derived from the name."""
    seed = hashlib.sha256(name.encode()).digest()
    point = b"\x04" + hashlib.sha512(name.encode()).digest()
    ed = ssh_string(b"ssh-ed25519") + ssh_string(seed)
    ec = ssh_string(b"ecdsa-sha2-nistp256") + ssh_string(b"nistp256") + ssh_string(point)
    return {"ssh-ed25519": base64.b64encode(ed).decode(),
            "ecdsa-sha2-nistp256": base64.b64encode(ec).decode()}


# ---- server-side list filters --------------------------------------------
# What gcloud's filter_rewrite sends: `name eq ".*(^x$).*"` (RE2, full
# match), `ne`, terms in parentheses, joined by juxtaposition or AND/OR.

FILTER_TOKEN = re.compile(r'\s*(?:(\()|(\))|"((?:[^"\\]|\\.)*)"|\'((?:[^\'\\]|\\.)*)\'|(!=|=|:)|([^\s()"\'=!:]+))')


def tokenize_filter(text):
    tokens, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = FILTER_TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise invalid("filter", text, "Invalid list filter expression.")
        pos = m.end()
        lp, rp, dq, sq, sym, word = m.groups()
        if lp:
            tokens.append(("(", None))
        elif rp:
            tokens.append((")", None))
        elif dq is not None:
            tokens.append(("str", re.sub(r'\\(.)', r'\1', dq)))
        elif sq is not None:
            tokens.append(("str", re.sub(r"\\(.)", r"\1", sq)))
        elif sym:
            tokens.append(("op", sym))
        else:
            tokens.append(("word", word))
    return tokens


def parse_filter(text):
    """A predicate on resources; raises ApiError on syntax it does not know."""
    tokens = tokenize_filter(text)
    pos = [0]

    def peek():
        return tokens[pos[0]] if pos[0] < len(tokens) else (None, None)

    def take():
        tok = peek()
        pos[0] += 1
        return tok

    def bad():
        return invalid("filter", text, "Invalid list filter expression.")

    def term():
        kind, value = peek()
        if kind == "(":
            take()
            inner = disjunction()
            if take()[0] != ")":
                raise bad()
            return inner
        if kind != "word":
            raise bad()
        field = take()[1]
        kind, op = take()
        if kind == "word" and op in ("eq", "ne"):
            pass
        elif kind == "op" and op in ("=", "!="):
            pass
        else:
            raise bad()
        kind, literal = take()
        if kind not in ("str", "word"):
            raise bad()
        if op in ("eq", "ne"):
            try:
                rx = re.compile(literal)
            except re.error:
                raise bad()
            match = lambda v: v is not None and rx.fullmatch(v) is not None
        else:
            match = lambda v: v == literal
        negate = op in ("ne", "!=")
        return lambda r: match(field_text(r, field)) != negate

    def conjunction():
        terms = [term()]
        while True:
            kind, value = peek()
            if kind == "word" and value == "AND":
                take()
                terms.append(term())
            elif kind in ("(", "word") and value != "OR":
                terms.append(term())
            else:
                return lambda r: all(t(r) for t in terms)

    def disjunction():
        parts = [conjunction()]
        while peek() == ("word", "OR"):
            take()
            parts.append(conjunction())
        return lambda r: any(p(r) for p in parts)

    pred = disjunction()
    if pos[0] != len(tokens):
        raise bad()
    return pred


def field_text(resource, path):
    value = resource
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    return None


# ---- the mock --------------------------------------------------------------

class Mock:
    def __init__(self, state_dir):
        self.dir = state_dir
        self.lock = threading.RLock()
        self.log_lock = threading.Lock()
        self.base = None  # http://127.0.0.1:PORT/compute/v1/, set once bound
        self.ids = itertools.count(1000000000000000001)
        self.projects = {}
        self.operations = {}  # selfLink path -> operation
        self.tokens = set()
        # test controls
        self.hosts = {}
        self.failures = []
        self.insert_counts = {}
        self.org_policies = {}
        self.hostkey_delay_reads = 0
        self.hostkey_reads = {}
        self.serial = {}  # instance -> serial console text
        self.deprecated_types = {}
        self.token_error = None
        self.next_internal = 2
        # Forwarding rules' external addresses: TEST-NET-3 (RFC 5737),
        # documentation only, routed nowhere.
        self.next_forwarding_ip = 10

    # -- helpers --
    def url(self, path):
        return self.base + path

    def rel(self, value):
        """A URL or partial URL as `projects/...`."""
        if value is None:
            return None
        for prefix in (self.base, "https://www.googleapis.com/compute/v1/",
                       "https://compute.googleapis.com/compute/v1/"):
            if value.startswith(prefix):
                return value[len(prefix):]
        return value.lstrip("/")

    def strip(self, value):
        """Values logged without this server's address (stable across runs)."""
        if isinstance(value, str):
            return value.replace(self.base, "")
        if isinstance(value, list):
            return [self.strip(v) for v in value]
        if isinstance(value, dict):
            return {k: self.strip(v) for k, v in value.items()}
        return value

    def project(self, name):
        if not RFC1035.match(name) or not 6 <= len(name) <= 30:
            raise not_found("projects/%s" % name)
        p = self.projects.get(name)
        if p is None:
            p = self.projects[name] = {
                "networks": {}, "subnetworks": {}, "firewalls": {}, "routes": {},
                "instances": {}, "targetPools": {}, "forwardingRules": {},
                "disks": {},
                "metadata": {},
                "quotas": dict(GLOBAL_QUOTAS),
                "regionQuotas": {},
                "id": str(next(self.ids)),
            }
        return p

    # -- logging --
    def log(self, entry):
        with self.log_lock:
            with open(os.path.join(self.dir, "requests.jsonl"), "a") as f:
                f.write(json.dumps(entry, sort_keys=True) + "\n")

    # -- failures --
    def injected(self, method, kind, name):
        """The failure a test injected for this call of `method` (insert or
        delete) on `kind`/`name`, or None. Counts every call."""
        key = (method, kind, name)
        self.insert_counts[key] = self.insert_counts.get(key, 0) + 1
        n = self.insert_counts[key]
        for f in self.failures:
            if f.get("method", "insert") != method or f["kind"] != kind:
                continue
            if f.get("name") not in (None, name):
                continue
            first = f.get("nth", 1)
            times = f.get("times", 1)
            if n >= first and (times == "always" or n < first + times):
                return f
        return None

    def raise_injected(self, failure, region=None):
        error = failure.get("error", "internal")
        if error == "quota":
            metric = failure.get("metric", "CPUS")
            raise ApiError(403, "quotaExceeded", "Quota '%s' exceeded.  Limit: %s in region %s."
                           % (metric, failure.get("limit", 8.0), region or "us-central1"))
        if error == "unavailable":
            raise ApiError(503, "backendError", "The service is currently unavailable.")
        if error == "notReady":
            raise ApiError(400, "resourceNotReady", "The resource '%s' is not ready" % failure.get("resource", "projects/-/global/networks/-"))
        if error == "invalid":
            raise ApiError(400, "invalid", failure.get("message", "Invalid request."))

    # -- operations --
    def operation(self, project, scope, op_type, target, failure=None):
        name = "operation-%d-%s" % (int(time.time() * 1000), secrets.token_hex(8))
        path = "projects/%s/%s/operations/%s" % (project, scope, name)
        op = {
            "kind": "compute#operation",
            "id": str(next(self.ids)),
            "name": name,
            "operationType": op_type,
            "targetLink": self.url(target),
            "targetId": str(next(self.ids)),
            "status": "RUNNING",
            "user": "kctl-test@my-proj-123.iam.gserviceaccount.com",
            "progress": 0,
            "insertTime": now(),
            "startTime": now(),
            "selfLink": self.url(path),
        }
        if scope.startswith("zones/"):
            op["zone"] = self.url("projects/%s/%s" % (project, scope))
        elif scope.startswith("regions/"):
            op["region"] = self.url("projects/%s/%s" % (project, scope))
        if failure:
            op["_error"] = failure
        self.operations[path] = op
        return self.show_op(op)

    def show_op(self, op):
        return {k: v for k, v in op.items() if not k.startswith("_")}

    def finish(self, path):
        op = self.operations.get(path)
        if op is None:
            raise not_found(path)
        if op["status"] != "DONE":
            op["status"], op["progress"], op["endTime"] = "DONE", 100, now()
            failure = op.pop("_error", None)
            if failure:
                message = failure.get("message", "Internal error. Please try again or contact Google Support. (Code: '5C2B8E2A3C4D1.A1B2C3D4')")
                op["error"] = {"errors": [{"code": failure.get("code", "INTERNAL_ERROR"),
                                           "message": message}]}
                op["httpErrorStatusCode"] = failure.get("http", 500)
                op["httpErrorMessage"] = "INTERNAL SERVER ERROR"
        return self.show_op(op)

    # -- reads of fixed resources --
    def zone(self, p, z):
        self.project(p)
        if z not in ZONES:
            raise not_found("projects/%s/zones/%s" % (p, z))
        region = z.rsplit("-", 1)[0]
        return {"kind": "compute#zone", "id": str(2000 + ZONES.index(z)),
                "creationTimestamp": "1969-12-31T16:00:00.000-08:00", "name": z,
                "description": z, "status": "UP",
                "region": self.url("projects/%s/regions/%s" % (p, region)),
                "selfLink": self.url("projects/%s/zones/%s" % (p, z)),
                "availableCpuPlatforms": ["Intel Broadwell", "AMD Milan"],
                "supportsPzs": False}

    def region_usage(self, proj, region):
        cpus = instances = addresses = disks = 0
        for inst in proj["instances"].values():
            if last(inst["zone"]).rsplit("-", 1)[0] != region:
                continue
            instances += 1
            cpus += MACHINE_TYPES.get(last(inst["machineType"]), (1,))[0]
            addresses += sum(len(n.get("accessConfigs", [])) for n in inst["networkInterfaces"])
            disks += sum(int(d.get("diskSizeGb", 10)) for d in inst["disks"])
        return {"CPUS": cpus, "INSTANCES": instances, "IN_USE_ADDRESSES": addresses,
                "DISKS_TOTAL_GB": disks}

    def region(self, p, r):
        proj = self.project(p)
        if r not in REGIONS:
            raise not_found("projects/%s/regions/%s" % (p, r))
        limits = dict(REGION_QUOTAS, **proj["regionQuotas"].get(r, {}))
        usage = self.region_usage(proj, r)
        return {"kind": "compute#region", "id": str(1000 + REGIONS.index(r)),
                "creationTimestamp": "1969-12-31T16:00:00.000-08:00", "name": r,
                "description": r, "status": "UP",
                "zones": [self.url("projects/%s/zones/%s" % (p, z)) for z in ZONES
                          if z.rsplit("-", 1)[0] == r],
                "quotas": [{"metric": m, "limit": float(limits[m]), "usage": float(usage[m])}
                           for m in sorted(limits)],
                "selfLink": self.url("projects/%s/regions/%s" % (p, r)),
                "supportsPzs": False}

    def machine_type(self, p, z, name):
        self.zone(p, z)
        if name not in MACHINE_TYPES:
            raise not_found("projects/%s/zones/%s/machineTypes/%s" % (p, z, name))
        cpus, mem, shared, desc = MACHINE_TYPES[name]
        mt = {"kind": "compute#machineType", "id": str(3000 + sorted(MACHINE_TYPES).index(name)),
              "creationTimestamp": "1969-12-31T16:00:00.000-08:00", "name": name,
              "description": desc, "guestCpus": cpus, "memoryMb": mem, "isSharedCpu": shared,
              "imageSpaceGb": 0, "maximumPersistentDisks": 16,
              "maximumPersistentDisksSizeGb": "3072", "zone": z,
              "selfLink": self.url("projects/%s/zones/%s/machineTypes/%s" % (p, z, name))}
        if name in self.deprecated_types:
            dep = dict(self.deprecated_types[name])
            if "replacement" in dep:
                dep["replacement"] = self.url("projects/%s/zones/%s/machineTypes/%s" % (p, z, dep["replacement"]))
            mt["deprecated"] = dep
        return mt

    def image_from_family(self, p, family):
        self.project(p)
        name = IMAGES.get((p, family))
        if name is None:
            raise not_found("projects/%s/global/images/family/%s" % (p, family))
        return {"kind": "compute#image", "id": str(4000 + len(name)),
                "creationTimestamp": "2026-03-10T00:00:00.000-07:00", "name": name,
                "description": "Debian, %s, amd64 built on 20260310" % family,
                "family": family, "status": "READY", "architecture": "X86_64",
                "diskSizeGb": "10", "archiveSizeBytes": "1234567890",
                "sourceType": "RAW", "licenses": [],
                "selfLink": self.url("projects/%s/global/images/%s" % (p, name))}

    def image_exists(self, path):
        """`projects/P/global/images/NAME`, `.../images/family/FAMILY` or
        `projects/P/zones/Z/imageFamilyViews/FAMILY` (what gcloud sends)."""
        m = re.fullmatch(r"projects/([^/]+)/(?:global/images/(?:family/([^/]+)|([^/]+))|zones/[^/]+/imageFamilyViews/([^/]+))", path)
        if not m:
            return False
        project, family, name, view = m.groups()
        family = family or view
        if family:
            return (project, family) in IMAGES
        return any(ip == project and n == name for (ip, _), n in IMAGES.items())

    def project_view(self, p):
        proj = self.project(p)
        counts = {"NETWORKS": len(proj["networks"]), "FIREWALLS": len(proj["firewalls"]),
                  "ROUTES": len(proj["routes"]), "SUBNETWORKS": len(proj["subnetworks"])}
        items = [{"key": k, "value": v} for k, v in sorted(proj["metadata"].items())]
        return {"kind": "compute#project", "id": proj["id"], "name": p,
                "creationTimestamp": "2024-01-01T00:00:00.000-08:00",
                "commonInstanceMetadata": {"kind": "compute#metadata",
                                           "fingerprint": "xT0-Y4mXvZk=", "items": items},
                "quotas": [{"metric": m, "limit": float(proj["quotas"][m]),
                            "usage": float(counts.get(m, 0))} for m in sorted(proj["quotas"])],
                "defaultServiceAccount": "123456789-compute@developer.gserviceaccount.com",
                "defaultNetworkTier": "PREMIUM", "xpnProjectStatus": "UNSPECIFIED_XPN_PROJECT_STATUS",
                "selfLink": self.url("projects/%s" % p)}

    # -- created resources --
    def new_resource(self, kind, name, path):
        if not isinstance(name, str) or not RFC1035.match(name):
            raise invalid("resource.name", name, "Must be a match of regex '(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'")
        return {"kind": "compute#" + kind, "id": str(next(self.ids)), "name": name,
                "creationTimestamp": now(), "selfLink": self.url(path)}

    def network_of(self, p, value):
        """The network a body names (URL, partial URL or name); 404 if absent."""
        proj = self.project(p)
        name = last(self.rel(value)) if value else "default"
        if name not in proj["networks"]:
            raise not_found("projects/%s/global/networks/%s" % (p, name))
        return proj["networks"][name]

    def insert_network(self, p, body):
        proj = self.project(p)
        path = "projects/%s/global/networks/%s" % (p, body.get("name"))
        net = self.new_resource("network", body.get("name"), path)
        if "IPv4Range" in body:
            raise ApiError(400, "invalid", "Invalid value for field 'resource.IPv4Range': '%s'. Legacy networks are no longer supported." % body["IPv4Range"])
        if body["name"] in proj["networks"]:
            raise ApiError(409, "alreadyExists", "The resource '%s' already exists" % path)
        mtu = int(body.get("mtu", 1460))
        if not 1300 <= mtu <= 8896:
            raise invalid("resource.mtu", mtu, "Must be between 1300 and 8896.")
        auto = bool(body.get("autoCreateSubnetworks", False))
        net.update({"autoCreateSubnetworks": auto, "subnetworks": [], "mtu": mtu,
                    "routingConfig": body.get("routingConfig", {"routingMode": "REGIONAL"}),
                    "networkFirewallPolicyEnforcementOrder": "AFTER_CLASSIC_FIREWALL"})
        if "description" in body:
            net["description"] = body["description"]
        proj["networks"][body["name"]] = net
        return path, "global"

    def insert_subnetwork(self, p, region, body):
        proj = self.project(p)
        if region not in REGIONS:
            raise not_found("projects/%s/regions/%s" % (p, region))
        path = "projects/%s/regions/%s/subnetworks/%s" % (p, region, body.get("name"))
        sub = self.new_resource("subnetwork", body.get("name"), path)
        if body["name"] in proj["subnetworks"]:
            raise ApiError(409, "alreadyExists", "The resource '%s' already exists" % path)
        net = self.network_of(p, body.get("network"))
        try:
            cidr = ipaddress.ip_network(body.get("ipCidrRange", ""))
        except ValueError:
            raise invalid("resource.ipCidrRange", body.get("ipCidrRange"), "Must be a CIDR range.")
        for other in proj["subnetworks"].values():
            if other["network"] == net["selfLink"] and ipaddress.ip_network(other["ipCidrRange"]).overlaps(cidr):
                raise invalid("resource.ipCidrRange", str(cidr), "Invalid IPCidrRange: %s conflicts with existing subnetwork '%s' in region '%s'." % (cidr, other["name"], last(other["region"])))
        sub.update({"network": net["selfLink"], "ipCidrRange": str(cidr),
                    "gatewayAddress": str(next(cidr.hosts())),
                    "region": self.url("projects/%s/regions/%s" % (p, region)),
                    "privateIpGoogleAccess": bool(body.get("privateIpGoogleAccess", False)),
                    "stackType": "IPV4_ONLY", "purpose": "PRIVATE",
                    "fingerprint": "Yx1qQ9yA0Zc="})
        proj["subnetworks"][body["name"]] = sub
        net["subnetworks"].append(sub["selfLink"])
        return path, "regions/" + region

    def insert_firewall(self, p, body):
        proj = self.project(p)
        path = "projects/%s/global/firewalls/%s" % (p, body.get("name"))
        fw = self.new_resource("firewall", body.get("name"), path)
        if body["name"] in proj["firewalls"]:
            raise ApiError(409, "alreadyExists", "The resource '%s' already exists" % path)
        net = self.network_of(p, body.get("network"))
        for r in body.get("sourceRanges", []):
            try:
                ipaddress.ip_network(r)
            except ValueError:
                raise invalid("resource.sourceRanges[0]", r, "Must be a CIDR address range that is contained in the address space.")
        fw.update({"network": net["selfLink"], "direction": body.get("direction", "INGRESS"),
                   "priority": int(body.get("priority", 1000)),
                   "sourceRanges": body.get("sourceRanges", []) or (["0.0.0.0/0"] if not body.get("sourceTags") else []),
                   "allowed": body.get("allowed", []), "disabled": bool(body.get("disabled", False)),
                   "logConfig": {"enable": False}})
        for key in ("targetTags", "sourceTags", "description", "denied"):
            if body.get(key):
                fw[key] = body[key]
        if not fw["sourceRanges"]:
            del fw["sourceRanges"]
        proj["firewalls"][body["name"]] = fw
        return path, "global"

    def insert_route(self, p, body):
        proj = self.project(p)
        path = "projects/%s/global/routes/%s" % (p, body.get("name"))
        route = self.new_resource("route", body.get("name"), path)
        if body["name"] in proj["routes"]:
            raise ApiError(409, "alreadyExists", "The resource '%s' already exists" % path)
        net = self.network_of(p, body.get("network"))
        try:
            dest = ipaddress.ip_network(body.get("destRange", ""))
        except ValueError:
            raise invalid("resource.destRange", body.get("destRange"), "Must be a CIDR range.")
        for sub in proj["subnetworks"].values():
            if sub["network"] == net["selfLink"] and ipaddress.ip_network(sub["ipCidrRange"]).overlaps(dest):
                raise invalid("resource.destRange", str(dest), "Route destination may not overlap subnetwork '%s' (%s) of network '%s'." % (sub["name"], sub["ipCidrRange"], net["name"]))
        hops = [k for k in ("nextHopInstance", "nextHopIp", "nextHopGateway", "nextHopVpnTunnel", "nextHopIlb") if body.get(k)]
        if len(hops) != 1:
            raise invalid("resource.nextHop", "", "Exactly one next hop must be specified.")
        route.update({"network": net["selfLink"], "destRange": str(dest),
                      "priority": int(body.get("priority", 1000)), "routeType": "STATIC",
                      "routeStatus": "ACTIVE"})
        for key in ("description", "tags"):
            if body.get(key):
                route[key] = body[key]
        hop = hops[0]
        route[hop] = self.url(self.rel(body[hop])) if hop == "nextHopInstance" else body[hop]
        proj["routes"][body["name"]] = route
        return path, "global"

    def region_scope(self, p, region):
        self.project(p)
        if region not in REGIONS:
            raise not_found("projects/%s/regions/%s" % (p, region))
        return self.url("projects/%s/regions/%s" % (p, region))

    def insert_disk(self, p, z, body):
        """A zonal persistent disk, as `disks create` (or the user) makes it."""
        proj = self.project(p)
        self.zone(p, z)
        name = body.get("name") or ""
        if not RFC1035.match(name):
            raise invalid("resource.name", name, "Must be a match of regex '[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?'")
        path = "projects/%s/zones/%s/disks/%s" % (p, z, name)
        if name in proj["disks"]:
            raise ApiError(409, "alreadyExists", "The resource '%s' already exists" % path)
        disk = self.new_resource("disk", name, path)
        disk.update({"zone": self.url("projects/%s/zones/%s" % (p, z)),
                     "sizeGb": str(body.get("sizeGb", 10)), "status": "READY",
                     "type": self.url("projects/%s/zones/%s/diskTypes/pd-standard" % (p, z)),
                     "users": []})
        proj["disks"][name] = disk
        return path, "zones/" + z

    def attach_disk(self, p, z, name, body):
        """instances.attachDisk: {source, deviceName?, mode?}. A disk in use
        read-write, or wanted read-write while in use, is refused (400
        resourceInUseByAnotherResource), as GCE does."""
        proj = self.project(p)
        inst = proj["instances"].get(name)
        ipath = "projects/%s/zones/%s/instances/%s" % (p, z, name)
        if inst is None or last(inst["zone"]) != z:
            raise not_found(ipath)
        body = body or {}
        rel = self.rel(body.get("source") or "")
        disk = proj["disks"].get(last(rel)) if rel else None
        if disk is None or self.rel(disk["selfLink"]) != rel:
            raise not_found(rel or "projects/%s/zones/%s/disks/-" % (p, z))
        mode = body.get("mode", "READ_WRITE")
        if mode not in ("READ_WRITE", "READ_ONLY"):
            raise invalid("resource.mode", mode, "Must be READ_WRITE or READ_ONLY.")
        # GCE's own default when none is given (not the disk's name).
        device = body.get("deviceName") or "persistent-disk-%d" % len(inst["disks"])
        if any(d["deviceName"] == device or d["source"] == disk["selfLink"] for d in inst["disks"]):
            raise invalid("resource.deviceName", device, "A disk with this device name or source is already attached.")
        for user in disk["users"]:
            other = proj["instances"].get(last(user))
            other_mode = next((d["mode"] for d in (other or {}).get("disks", []) if d["source"] == disk["selfLink"]), "READ_WRITE")
            if mode == "READ_WRITE" or other_mode == "READ_WRITE":
                raise ApiError(400, "resourceInUseByAnotherResource",
                               "The disk resource '%s' is already being used by '%s'" % (self.rel(disk["selfLink"]), self.rel(user)))
        inst["disks"].append({"kind": "compute#attachedDisk", "type": "PERSISTENT", "mode": mode,
                              "source": disk["selfLink"], "deviceName": device,
                              "index": max(d["index"] for d in inst["disks"]) + 1 if inst["disks"] else 0,
                              "boot": False, "autoDelete": False, "diskSizeGb": disk["sizeGb"],
                              "interface": "SCSI"})
        disk["users"].append(inst["selfLink"])
        return ipath, "zones/" + z

    def detach_disk(self, p, z, name, device):
        proj = self.project(p)
        inst = proj["instances"].get(name)
        ipath = "projects/%s/zones/%s/instances/%s" % (p, z, name)
        if inst is None or last(inst["zone"]) != z:
            raise not_found(ipath)
        found = [d for d in inst["disks"] if d["deviceName"] == device]
        if not found:
            raise invalid("deviceName", device, "No attached disk found with device name '%s'" % device)
        if found[0].get("boot"):
            raise invalid("deviceName", device, "The boot disk cannot be detached.")
        inst["disks"].remove(found[0])
        disk = proj["disks"].get(last(found[0]["source"]))
        if disk:
            disk["users"] = [u for u in disk["users"] if u != inst["selfLink"]]
        return ipath, "zones/" + z

    def instance_link(self, p, value):
        """An instance a target pool names (URL or partial URL); 404 if absent."""
        proj = self.project(p)
        rel = self.rel(value or "")
        inst = proj["instances"].get(last(rel))
        if inst is None or self.rel(inst["selfLink"]) != rel:
            raise not_found(rel or "projects/%s/zones/-/instances/-" % p)
        return inst["selfLink"]

    def insert_target_pool(self, p, region, body):
        proj = self.project(p)
        region_link = self.region_scope(p, region)
        path = "projects/%s/regions/%s/targetPools/%s" % (p, region, body.get("name"))
        pool = self.new_resource("targetPool", body.get("name"), path)
        if body["name"] in proj["targetPools"]:
            raise ApiError(409, "alreadyExists", "The resource '%s' already exists" % path)
        instances = [self.instance_link(p, i) for i in body.get("instances", [])]
        pool.update({"region": region_link, "instances": instances,
                     "sessionAffinity": body.get("sessionAffinity", "NONE")})
        for key in ("description", "healthChecks", "backupPool", "failoverRatio"):
            if body.get(key):
                pool[key] = body[key]
        proj["targetPools"][body["name"]] = pool
        return path, "regions/" + region

    def target_pool_members(self, p, region, name, body, add):
        """addInstance / removeInstance: {"instances": [{"instance": URL}]}."""
        proj = self.project(p)
        pool = proj["targetPools"].get(name)
        path = "projects/%s/regions/%s/targetPools/%s" % (p, region, name)
        if pool is None or last(pool["region"]) != region:
            raise not_found(path)
        links = [self.instance_link(p, (i or {}).get("instance")) if add else self.url(self.rel((i or {}).get("instance", "")))
                 for i in (body or {}).get("instances", [])]
        if not links:
            raise invalid("resource.instances", "", "At least one instance must be specified.")
        for link in links:
            if add and link not in pool["instances"]:
                pool["instances"].append(link)
            if not add:
                if link not in pool["instances"]:
                    raise invalid("resource.instances", self.rel(link), "The instance '%s' is not a member of target pool '%s'." % (self.rel(link), name))
                pool["instances"].remove(link)
        return path, "regions/" + region

    def insert_forwarding_rule(self, p, region, body):
        proj = self.project(p)
        region_link = self.region_scope(p, region)
        path = "projects/%s/regions/%s/forwardingRules/%s" % (p, region, body.get("name"))
        rule = self.new_resource("forwardingRule", body.get("name"), path)
        if body["name"] in proj["forwardingRules"]:
            raise ApiError(409, "alreadyExists", "The resource '%s' already exists" % path)
        protocol = body.get("IPProtocol", "TCP")
        if protocol not in ("TCP", "UDP", "ESP", "AH", "SCTP", "ICMP", "L3_DEFAULT"):
            raise invalid("resource.IPProtocol", protocol, "Must be one of TCP, UDP, ESP, AH, SCTP, ICMP, L3_DEFAULT.")
        port_range = body.get("portRange", "")
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", port_range)
        if port_range and (not m or not 1 <= int(m.group(1)) <= int(m.group(2) or m.group(1)) <= 65535):
            raise invalid("resource.portRange", port_range, "Must be a port or a range of ports between 1 and 65535.")
        target = self.rel(body.get("target", ""))
        pool = proj["targetPools"].get(last(target))
        if pool is None or self.rel(pool["selfLink"]) != target:
            raise not_found(target or "projects/%s/regions/%s/targetPools/-" % (p, region))
        if last(pool["region"]) != region:
            raise invalid("resource.target", target, "The target pool must be in the forwarding rule's region.")
        address = body.get("IPAddress")
        if not address:
            address = "203.0.113.%d" % self.next_forwarding_ip
            self.next_forwarding_ip += 1
        rule.update({"region": region_link, "IPAddress": address, "IPProtocol": protocol,
                     "target": pool["selfLink"], "loadBalancingScheme": body.get("loadBalancingScheme", "EXTERNAL"),
                     "networkTier": body.get("networkTier", "PREMIUM"), "fingerprint": "dKLXRs-fP0I="})
        if port_range:
            rule["portRange"] = "%s-%s" % (m.group(1), m.group(2) or m.group(1))
        for key in ("description", "ports"):
            if body.get(key):
                rule[key] = body[key]
        proj["forwardingRules"][body["name"]] = rule
        return path, "regions/" + region

    def hostkeys_for(self, name):
        host = self.hosts.get(name, {})
        return host.get("hostkeys") or generated_hostkeys(name)

    def insert_instance(self, p, z, body):
        proj = self.project(p)
        self.zone(p, z)
        region = z.rsplit("-", 1)[0]
        name = body.get("name")
        path = "projects/%s/zones/%s/instances/%s" % (p, z, name)
        inst = self.new_resource("instance", name, path)
        if name in proj["instances"]:
            raise ApiError(409, "alreadyExists", "The resource '%s' already exists" % path)
        mt = last(self.rel(body.get("machineType", "")))
        if mt not in MACHINE_TYPES:
            raise invalid("resource.machineType", body.get("machineType"),
                          "Machine type with name '%s' does not exist in zone '%s'." % (mt, z))
        nics = body.get("networkInterfaces") or [{}]
        if len(nics) != 1:
            raise invalid("resource.networkInterfaces", len(nics), "Only one network interface is supported here.")
        nic = nics[0]
        if nic.get("subnetwork"):
            sub_name = last(self.rel(nic["subnetwork"]))
            sub = proj["subnetworks"].get(sub_name)
            if sub is None or last(sub["region"]) != region:
                raise not_found("projects/%s/regions/%s/subnetworks/%s" % (p, region, sub_name))
            net = proj["networks"][last(sub["network"])]
        else:
            net = self.network_of(p, nic.get("network"))
            subs = [s for s in proj["subnetworks"].values()
                    if s["network"] == net["selfLink"] and last(s["region"]) == region]
            if not subs:
                raise invalid("resource.networkInterfaces[0]", net["name"],
                              "Network '%s' does not have a subnetwork in region '%s'; specify one with --subnet." % (net["name"], region))
            sub = subs[0]
        disks = body.get("disks") or []
        if not any(d.get("boot") for d in disks):
            raise invalid("resource.disks", "", "A boot disk is required.")
        size = 0
        for d in disks:
            params = d.get("initializeParams", {})
            size += int(params.get("diskSizeGb", 10))
            image = self.rel(params.get("sourceImage"))
            if image and not self.image_exists(image):
                raise not_found(image)
            dtype = last(params.get("diskType", "pd-standard"))
            if dtype not in DISK_TYPES:
                raise not_found("projects/%s/zones/%s/diskTypes/%s" % (p, z, dtype))
        # Regional quotas, as GCE checks them before creating anything.
        limits = dict(REGION_QUOTAS, **proj["regionQuotas"].get(region, {}))
        usage = self.region_usage(proj, region)
        want = {"CPUS": MACHINE_TYPES[mt][0], "INSTANCES": 1,
                "IN_USE_ADDRESSES": len(nic.get("accessConfigs", [])), "DISKS_TOTAL_GB": size}
        for metric in ("CPUS", "DISKS_TOTAL_GB", "IN_USE_ADDRESSES", "INSTANCES"):
            if usage[metric] + want[metric] > limits[metric]:
                raise ApiError(403, "quotaExceeded", "Quota '%s' exceeded.  Limit: %.1f in region %s."
                               % (metric, float(limits[metric]), region))
        host = self.hosts.get(name, {})
        cidr = ipaddress.ip_network(sub["ipCidrRange"])
        internal = host.get("internalIp")
        if internal is None:
            used = {i["networkInterfaces"][0]["networkIP"] for i in proj["instances"].values()}
            while True:
                candidate = str(cidr.network_address + self.next_internal)
                self.next_internal += 1
                if candidate not in used:
                    internal = candidate
                    break
        octet = internal.rsplit(".", 1)[1]
        out_nic = {"kind": "compute#networkInterface", "name": "nic0",
                   "network": net["selfLink"], "subnetwork": sub["selfLink"],
                   "networkIP": internal, "stackType": "IPV4_ONLY", "fingerprint": "7gFyhxGRUew="}
        if nic.get("accessConfigs"):
            ac = nic["accessConfigs"][0]
            out_nic["accessConfigs"] = [{"kind": "compute#accessConfig", "type": ac.get("type", "ONE_TO_ONE_NAT"),
                                         "name": ac.get("name", "external-nat"),
                                         "natIP": host.get("externalIp", "127.77.0.%s" % octet),
                                         "networkTier": "PREMIUM"}]
        metadata = body.get("metadata", {}).get("items", [])
        keys = [m.get("key") for m in metadata]
        if len(keys) != len(set(keys)):
            raise invalid("resource.metadata", "", "Duplicate metadata key.")
        labels = body.get("labels") or {}
        for k, v in labels.items():
            if not re.match(r"^[a-z][a-z0-9_-]{0,62}$", k) or not re.match(r"^[a-z0-9_-]{0,63}$", v):
                raise invalid("resource.labels", "%s=%s" % (k, v), "Label keys and values must be lower-case.")
        inst.update({
            "zone": self.url("projects/%s/zones/%s" % (p, z)),
            "machineType": self.url("projects/%s/zones/%s/machineTypes/%s" % (p, z, mt)),
            "status": "RUNNING",
            "canIpForward": bool(body.get("canIpForward", False)),
            "networkInterfaces": [out_nic],
            "disks": [{"kind": "compute#attachedDisk", "type": "PERSISTENT", "mode": "READ_WRITE",
                       "source": self.url("projects/%s/zones/%s/disks/%s" % (p, z, name if i == 0 else "%s-%d" % (name, i))),
                       "deviceName": d.get("deviceName", "persistent-disk-%d" % i), "index": i,
                       "boot": bool(d.get("boot")), "autoDelete": bool(d.get("autoDelete", True)),
                       "diskSizeGb": str(d.get("initializeParams", {}).get("diskSizeGb", 10)),
                       "interface": "SCSI"} for i, d in enumerate(disks)],
            "metadata": {"kind": "compute#metadata", "fingerprint": "q6FxMMGuL3A=",
                         "items": metadata},
            "tags": dict(body.get("tags") or {}, fingerprint="6smc4R4d39I="),
            "labels": labels,
            "labelFingerprint": "9x8pZRzv2S4=",
            "serviceAccounts": body.get("serviceAccounts", []),
            "scheduling": body.get("scheduling", {"automaticRestart": True, "onHostMaintenance": "MIGRATE", "preemptible": False}),
            "cpuPlatform": "Intel Broadwell",
            "startRestricted": False, "deletionProtection": bool(body.get("deletionProtection", False)),
            "fingerprint": "Sz0a5qXbJ2c=",
        })
        if not inst["labels"]:
            del inst["labels"]
        self.serial[name] = host.get("serialOutput", "")
        if body.get("description"):
            inst["description"] = body["description"]
        proj["instances"][name] = inst
        return path, "zones/" + z

    def metadata_value(self, proj, inst, key):
        for item in inst["metadata"].get("items", []):
            if item.get("key") == key:
                return item.get("value")
        return proj["metadata"].get(key)

    def guest_attributes(self, p, z, name, query_path):
        proj = self.project(p)
        inst = proj["instances"].get(name)
        if inst is None or last(inst["zone"]) != z:
            raise not_found("projects/%s/zones/%s/instances/%s" % (p, z, name))
        if self.org_policies.get("compute.disableGuestAttributesAccess"):
            raise ApiError(403, "forbidden", "Guest attributes access is disabled by the organization policy constraint 'constraints/compute.disableGuestAttributesAccess'.")
        enabled = str(self.metadata_value(proj, inst, "enable-guest-attributes") or "").lower() == "true"
        if not enabled:
            raise ApiError(400, "invalid", "Guest attributes are disabled for instance '%s'. Set metadata 'enable-guest-attributes' to TRUE to enable them." % name)
        if not re.match(r"^([\w\-]+/[\w\-]*)?$", query_path or ""):
            raise invalid("queryPath", query_path, "Must be a match of regex '([\\w\\-]+/[\\w\\-]*)?'.")
        reads = self.hostkey_reads.get(name, 0) + 1
        self.hostkey_reads[name] = reads
        items = []
        delay = self.hosts.get(name, {}).get("hostkeyDelayReads", self.hostkey_delay_reads)
        if reads > delay:
            items = [{"namespace": "hostkeys", "key": k, "value": v}
                     for k, v in sorted(self.hostkeys_for(name).items())]
        namespace, _, key = (query_path or "").partition("/")
        items = [i for i in items if (not namespace or i["namespace"] == namespace) and (not key or i["key"] == key)]
        if not items:
            raise not_found(query_path, "Guest Attribute")
        return {"kind": "compute#guestAttributes", "queryPath": query_path,
                "queryValue": {"items": items},
                "selfLink": self.url("projects/%s/zones/%s/instances/%s/getGuestAttributes" % (p, z, name))}

    def route_view(self, p, route):
        proj = self.project(p)
        route = copy.deepcopy(route)
        hop = route.get("nextHopInstance")
        if hop:
            name = last(hop)
            inst = proj["instances"].get(name)
            data = [{"key": "instance", "value": self.rel(hop)}]
            warning = None
            if inst is None:
                warning = ("NEXT_HOP_INSTANCE_NOT_FOUND", "Next hop instance '%s' does not exist." % self.rel(hop))
            elif inst["networkInterfaces"][0]["network"] != route["network"]:
                warning = ("NEXT_HOP_INSTANCE_NOT_ON_NETWORK", "Next hop instance '%s' is not on the route's network." % self.rel(hop))
            elif not inst["canIpForward"]:
                warning = ("NEXT_HOP_CANNOT_IP_FORWARD", "Next hop instance '%s' cannot ip forward." % self.rel(hop))
            elif inst["status"] != "RUNNING":
                warning = ("NEXT_HOP_NOT_RUNNING", "Next hop instance '%s' is not running." % self.rel(hop))
            if warning:
                route["warnings"] = [{"code": warning[0], "message": warning[1], "data": data}]
        return route

    def delete(self, p, kind, name, scope):
        proj = self.project(p)
        table = proj[kind]
        res = table.get(name)
        prefix = "projects/%s/%s/%s/%s" % (p, scope, kind, name)
        if res is None or (scope != "global" and self.rel(res.get("zone") or res.get("region")) != "projects/%s/%s" % (p, scope)):
            raise not_found(prefix)
        link = res["selfLink"]
        users = []
        if kind == "networks":
            for k in ("subnetworks", "firewalls", "routes"):
                users += [r["selfLink"] for r in proj[k].values() if r.get("network") == link]
            users += [i["selfLink"] for i in proj["instances"].values()
                      if i["networkInterfaces"][0]["network"] == link]
        if kind == "subnetworks":
            users += [i["selfLink"] for i in proj["instances"].values()
                      if i["networkInterfaces"][0]["subnetwork"] == link]
        if kind == "targetPools":
            users += [r["selfLink"] for r in proj["forwardingRules"].values() if r.get("target") == link]
        if users:
            what = {"networks": "network", "subnetworks": "subnetwork", "targetPools": "target pool"}[kind]
            raise ApiError(400, "resourceInUseByAnotherResource",
                           "The %s resource '%s' is already being used by '%s'" % (what, self.rel(link), self.rel(users[0])))
        del table[name]
        if kind == "subnetworks":
            net = proj["networks"].get(last(res["network"]))
            if net:
                net["subnetworks"] = [s for s in net["subnetworks"] if s != link]
        if kind == "instances":
            self.hostkey_reads.pop(name, None)
            self.serial.pop(name, None)
            # Attached disks outlive the instance (attach-disk leaves
            # auto-delete off); they lose it as a user.
            for disk in proj["disks"].values():
                disk["users"] = [u for u in disk.get("users", []) if u != link]
        return prefix, scope

    # -- state for tests --
    def state(self):
        projects = {}
        for name, proj in self.projects.items():
            view = {k: copy.deepcopy(proj[k]) for k in ("networks", "subnetworks", "firewalls", "instances",
                                                         "targetPools", "forwardingRules", "disks")}
            view["routes"] = {n: self.route_view(name, r) for n, r in proj["routes"].items()}
            view["metadata"] = dict(proj["metadata"])
            view["quotas"] = dict(proj["quotas"])
            view["regionQuotas"] = copy.deepcopy(proj["regionQuotas"])
            projects[name] = view
        return self.strip({"projects": projects, "orgPolicies": dict(self.org_policies),
                           "hostkeyReads": dict(self.hostkey_reads),
                           "operations": len(self.operations)})


# ---- HTTP ------------------------------------------------------------------

# Body fields worth a line in the request log (and so in the goldens).
LOGGED_FIELDS = ("name", "network", "subnetwork", "ipCidrRange", "autoCreateSubnetworks", "mtu",
                 "routingConfig", "direction", "allowed", "sourceRanges", "targetTags", "destRange",
                 "nextHopInstance", "priority", "machineType", "canIpForward", "tags", "labels",
                 "constraint", "description", "IPProtocol", "IPAddress", "portRange", "target",
                 "loadBalancingScheme", "instances", "source", "deviceName", "mode")


def key_fields(body):
    if not isinstance(body, dict):
        return None
    out = {k: body[k] for k in LOGGED_FIELDS if k in body}
    if "tags" in out and isinstance(out["tags"], dict):
        out["tags"] = out["tags"].get("items", [])
    if isinstance(body.get("metadata"), dict):
        out["metadataKeys"] = sorted(i.get("key") for i in body["metadata"].get("items", []))
    nics = body.get("networkInterfaces")
    if nics:
        out["networkInterfaces"] = [{k: n[k] for k in ("network", "subnetwork") if k in n} |
                                    ({"accessConfigs": len(n["accessConfigs"])} if n.get("accessConfigs") else {})
                                    for n in nics]
    disks = body.get("disks")
    if disks:
        out["disks"] = [{"boot": d.get("boot", False), "autoDelete": d.get("autoDelete"),
                         "diskSizeGb": d.get("initializeParams", {}).get("diskSizeGb"),
                         "diskType": last(d.get("initializeParams", {}).get("diskType")),
                         "sourceImage": d.get("initializeParams", {}).get("sourceImage")} for d in disks]
    if "serviceAccounts" in body:
        out["serviceAccounts"] = len(body["serviceAccounts"])
    return out


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    mock = None  # set by main

    def log_message(self, *args):
        pass

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def send(self, code, body, content_type="application/json; charset=UTF-8", extra=None):
        data = body if isinstance(body, bytes) else json.dumps(body, indent=1).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_DELETE(self):
        self.handle_any("DELETE")

    def do_PATCH(self):
        self.handle_any("PATCH")

    def do_PUT(self):
        self.handle_any("PUT")

    def handle_any(self, method):
        raw = self.read_body()
        code, body, ctype = self.mock_dispatch(method, self.path, dict(self.headers), raw, batch=None)
        self.send(code, body, ctype or "application/json; charset=UTF-8")

    def mock_dispatch(self, method, target, headers, raw, batch):
        """(status, body, content type) for one request, logged."""
        m = self.mock
        parsed = urllib.parse.urlsplit(target)
        path = parsed.path
        query = dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True))
        headers = {k.title(): v for k, v in headers.items()}
        agent = headers.get("User-Agent") or ""
        caller = re.search(r"environment/(\S+)", agent)
        command = re.search(r"command/(\S+)", agent)
        body = None
        if raw and ("json" in (headers.get("Content-Type") or "json") or path.startswith("/mock/")):
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        entry = {"method": method, "path": path,
                 "query": {k: v for k, v in query.items() if k not in ("alt", "prettyPrint")},
                 "caller": caller.group(1) if caller and caller.group(1) != "None" else None,
                 "command": command.group(1) if command else None,
                 "time": time.time()}
        if batch is not None:
            entry["batch"] = batch
        if path.startswith("/compute/") and body is not None:
            entry["body"] = m.strip(key_fields(body))
        if path == "/token":
            entry["body"] = {"grant_type": urllib.parse.parse_qs(raw.decode()).get("grant_type", [""])[0]}
        if path.startswith("/crm/") and body is not None:
            entry["body"] = body
        try:
            if path.startswith("/mock/"):
                code, out, ctype = 200, self.control(method, path, body), None
            elif path == "/token":
                code, out, ctype = 200, self.token(), None
            else:
                auth = headers.get("Authorization") or ""
                if not auth.startswith("Bearer ") or auth[7:] not in m.tokens:
                    raise ApiError(401, "authError", "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
                                   status="UNAUTHENTICATED")
                if path == "/batch/compute/v1":
                    entry["status"] = 200
                    m.log(entry)
                    return self.batch(headers, raw)
                with m.lock:
                    code, out, ctype = 200, self.api(method, path, query, body), None
        except TokenError as e:
            code, out, ctype = 400, e.body, None
        except ApiError as e:
            code, out, ctype = e.code, e.body(), None
        entry["status"] = code
        if not path.startswith("/mock/"):
            m.log(entry)
        return code, out, ctype

    def token(self):
        m = self.mock
        if m.token_error:
            raise TokenError({"error": m.token_error, "error_description": "Invalid grant: account not found"})
        token = "ya29.mock-" + secrets.token_urlsafe(24)
        with m.lock:
            m.tokens.add(token)
        return {"access_token": token, "expires_in": 3600, "token_type": "Bearer"}

    # -- batch: multipart/mixed of embedded HTTP requests --
    def batch(self, headers, raw):
        ctype = headers.get("Content-Type")
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + raw)
        parts = []
        for part in msg.iter_parts():
            payload = part.get_payload(decode=True)
            head, _, body = payload.partition(b"\r\n\r\n")
            if not _:
                head, _, body = payload.partition(b"\n\n")
            lines = head.decode().splitlines()
            method, target = lines[0].split()[:2]
            # Credentials and the caller's User-Agent are on the outer
            # request only (parts say just "google-cloud-sdk").
            sub_headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    sub_headers[k.strip().title()] = v.strip()
            for k in ("User-Agent", "Authorization"):
                sub_headers[k] = headers.get(k, "")
            parts.append((part.get("Content-ID"), method, target, sub_headers, body))
        boundary = "batch_" + secrets.token_hex(12)
        out = []
        for cid, method, target, sub_headers, body in parts:
            code, resp, _ = self.mock_dispatch(method, target, sub_headers, body, batch=True)
            data = json.dumps(resp).encode()
            reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
                      404: "Not Found", 409: "Conflict", 503: "Service Unavailable"}.get(code, "Error")
            out.append(("--%s\r\nContent-Type: application/http\r\nContent-ID: <response-%s>\r\n\r\n"
                        "HTTP/1.1 %d %s\r\nContent-Type: application/json; charset=UTF-8\r\nContent-Length: %d\r\n\r\n"
                        % (boundary, (cid or "").strip("<>"), code, reason, len(data))).encode() + data + b"\r\n")
        body = b"".join(out) + ("--%s--\r\n" % boundary).encode()
        return 200, body, "multipart/mixed; boundary=" + boundary

    # -- the Compute and Resource Manager APIs --
    def api(self, method, path, query, body):
        m = self.mock
        crm = re.fullmatch(r"/crm/v1/projects/([^/:]+):getEffectiveOrgPolicy", path)
        if crm and method == "POST":
            m.project(crm.group(1))
            constraint = (body or {}).get("constraint", "")
            short = constraint.split("/", 1)[-1]
            if short not in ORG_CONSTRAINTS:
                raise ApiError(400, "badRequest", "Constraint %s is not supported by this mock." % constraint, status="INVALID_ARGUMENT")
            policy = {"constraint": "constraints/" + short, "etag": "BwXVtIDm0kA=", "booleanPolicy": {}}
            if m.org_policies.get(short):
                policy["booleanPolicy"] = {"enforced": True}
                policy["updateTime"] = "2026-01-01T00:00:00Z"
            return policy
        if not path.startswith("/compute/v1/projects/"):
            raise ApiError(404, "notFound", "No such API path: %s" % path)
        parts = path[len("/compute/v1/"):].split("/")
        p = parts[1]
        rest = parts[2:]

        def listing(items, scope_path):
            if query.get("filter"):
                pred = parse_filter(query["filter"])
                items = [i for i in items if pred(i)]
            return {"kind": "compute#list", "id": scope_path, "items": items,
                    "selfLink": m.url(scope_path)}

        if not rest:
            if method == "GET":
                return m.project_view(p)
        proj = m.project(p)
        # operations
        if len(rest) >= 3 and rest[-2] == "operations" or (len(rest) >= 4 and rest[-3] == "operations" and rest[-1] == "wait"):
            if rest[-1] == "wait" and method == "POST":
                return m.finish("projects/%s/%s" % (p, "/".join(rest[:-1])))
            if method == "GET":
                return m.finish("projects/%s/%s" % (p, "/".join(rest)))
        if rest[0] == "zones" and len(rest) == 1 and method == "GET":
            return listing([m.zone(p, z) for z in ZONES], "projects/%s/zones" % p)
        if rest[0] == "zones" and len(rest) == 2 and method == "GET":
            return m.zone(p, rest[1])
        if rest[0] == "regions" and len(rest) == 2 and method == "GET":
            return m.region(p, rest[1])
        if rest[0] == "zones" and len(rest) == 4 and rest[2] == "machineTypes" and method == "GET":
            return m.machine_type(p, rest[1], rest[3])
        if rest[:3] == ["global", "images", "family"] and len(rest) == 4 and method == "GET":
            return m.image_from_family(p, rest[3])
        if rest[:2] == ["global", "images"] and len(rest) == 3 and method == "GET":
            for (ip, fam), name in IMAGES.items():
                if ip == p and name == rest[2]:
                    return m.image_from_family(p, fam)
            raise not_found("projects/%s/global/images/%s" % (p, rest[2]))
        # global collections
        if rest[0] == "global" and len(rest) >= 2 and rest[1] in ("networks", "firewalls", "routes"):
            kind = rest[1]
            view = (lambda r: m.route_view(p, r)) if kind == "routes" else (lambda r: r)
            if len(rest) == 2 and method == "GET":
                return listing([view(r) for _, r in sorted(proj[kind].items())], "projects/%s/global/%s" % (p, kind))
            if len(rest) == 2 and method == "POST":
                failure = m.injected("insert", kind, (body or {}).get("name"))
                if failure and failure.get("error") != "operation":
                    m.raise_injected(failure)
                fn = {"networks": m.insert_network, "firewalls": m.insert_firewall, "routes": m.insert_route}[kind]
                if failure:  # the operation fails; nothing is made
                    target = "projects/%s/global/%s/%s" % (p, kind, body.get("name"))
                    return m.operation(p, "global", "insert", target, failure)
                target, scope = fn(p, body or {})
                return m.operation(p, scope, "insert", target)
            if len(rest) == 3:
                if method == "GET":
                    res = proj[kind].get(rest[2])
                    if res is None:
                        raise not_found("projects/%s/global/%s/%s" % (p, kind, rest[2]))
                    return view(res)
                if method == "DELETE":
                    failure = m.injected("delete", kind, rest[2])
                    if failure:
                        m.raise_injected(failure)
                    target, scope = m.delete(p, kind, rest[2], "global")
                    return m.operation(p, scope, "delete", target)
        # regional subnetworks
        if rest[0] == "regions" and len(rest) >= 3 and rest[2] == "subnetworks":
            region = rest[1]
            if len(rest) == 3 and method == "GET":
                items = [s for _, s in sorted(proj["subnetworks"].items()) if last(s["region"]) == region]
                return listing(items, "projects/%s/regions/%s/subnetworks" % (p, region))
            if len(rest) == 3 and method == "POST":
                failure = m.injected("insert", "subnetworks", (body or {}).get("name"))
                if failure:
                    m.raise_injected(failure, region)
                target, scope = m.insert_subnetwork(p, region, body or {})
                return m.operation(p, scope, "insert", target)
            if len(rest) == 4:
                if method == "GET":
                    res = proj["subnetworks"].get(rest[3])
                    if res is None or last(res["region"]) != region:
                        raise not_found("projects/%s/regions/%s/subnetworks/%s" % (p, region, rest[3]))
                    return res
                if method == "DELETE":
                    target, scope = m.delete(p, "subnetworks", rest[3], "regions/" + region)
                    return m.operation(p, scope, "delete", target)
        # regional target pools and forwarding rules
        if rest[0] == "regions" and len(rest) >= 3 and rest[2] in ("targetPools", "forwardingRules"):
            region, kind = rest[1], rest[2]
            m.region_scope(p, region)
            if len(rest) == 3 and method == "GET":
                items = [r for _, r in sorted(proj[kind].items()) if last(r["region"]) == region]
                return listing(items, "projects/%s/regions/%s/%s" % (p, region, kind))
            if len(rest) == 3 and method == "POST":
                failure = m.injected("insert", kind, (body or {}).get("name"))
                if failure and failure.get("error") != "operation":
                    m.raise_injected(failure, region)
                if failure:
                    target = "projects/%s/regions/%s/%s/%s" % (p, region, kind, body.get("name"))
                    return m.operation(p, "regions/" + region, "insert", target, failure)
                fn = {"targetPools": m.insert_target_pool, "forwardingRules": m.insert_forwarding_rule}[kind]
                target, scope = fn(p, region, body or {})
                return m.operation(p, scope, "insert", target)
            if len(rest) == 4:
                if method == "GET":
                    res = proj[kind].get(rest[3])
                    if res is None or last(res["region"]) != region:
                        raise not_found("projects/%s/regions/%s/%s/%s" % (p, region, kind, rest[3]))
                    return res
                if method == "DELETE":
                    failure = m.injected("delete", kind, rest[3])
                    if failure:
                        m.raise_injected(failure, region)
                    target, scope = m.delete(p, kind, rest[3], "regions/" + region)
                    return m.operation(p, scope, "delete", target)
            if len(rest) == 5 and kind == "targetPools" and method == "POST" and rest[4] in ("addInstance", "removeInstance"):
                target, scope = m.target_pool_members(p, region, rest[3], body, rest[4] == "addInstance")
                return m.operation(p, scope, rest[4], target)
        # zonal disks
        if rest[0] == "zones" and len(rest) >= 3 and rest[2] == "disks":
            z = rest[1]
            m.zone(p, z)
            if len(rest) == 3 and method == "GET":
                items = [d for _, d in sorted(proj["disks"].items()) if last(d["zone"]) == z]
                return listing(items, "projects/%s/zones/%s/disks" % (p, z))
            if len(rest) == 3 and method == "POST":
                target, scope = m.insert_disk(p, z, body or {})
                return m.operation(p, scope, "insert", target)
            if len(rest) == 4 and method == "GET":
                disk = proj["disks"].get(rest[3])
                if disk is None or last(disk["zone"]) != z:
                    raise not_found("projects/%s/zones/%s/disks/%s" % (p, z, rest[3]))
                return disk
        # instances
        if rest[:2] == ["aggregated", "instances"] and method == "GET":
            pred = parse_filter(query["filter"]) if query.get("filter") else (lambda r: True)
            items = {}
            for z in ZONES:
                found = [i for _, i in sorted(proj["instances"].items()) if last(i["zone"]) == z and pred(i)]
                if found:
                    items["zones/" + z] = {"instances": found}
                else:
                    items["zones/" + z] = {"warning": {"code": "NO_RESULTS_ON_PAGE",
                                                       "message": "There are no results for scope 'zones/%s' on this page." % z,
                                                       "data": [{"key": "scope", "value": "zones/" + z}]}}
            return {"kind": "compute#instanceAggregatedList", "id": "projects/%s/aggregated/instances" % p,
                    "items": items, "selfLink": m.url("projects/%s/aggregated/instances" % p)}
        if rest[0] == "zones" and len(rest) >= 3 and rest[2] == "instances":
            z = rest[1]
            m.zone(p, z)
            if len(rest) == 3 and method == "GET":
                items = [i for _, i in sorted(proj["instances"].items()) if last(i["zone"]) == z]
                return listing(items, "projects/%s/zones/%s/instances" % (p, z))
            if len(rest) == 3 and method == "POST":
                failure = m.injected("insert", "instances", (body or {}).get("name"))
                if failure and failure.get("error") != "operation":
                    m.raise_injected(failure, z.rsplit("-", 1)[0])
                if failure:
                    target = "projects/%s/zones/%s/instances/%s" % (p, z, body.get("name"))
                    return m.operation(p, "zones/" + z, "insert", target, failure)
                target, scope = m.insert_instance(p, z, body or {})
                return m.operation(p, scope, "insert", target)
            if len(rest) >= 4:
                name = rest[3]
                inst = proj["instances"].get(name)
                if len(rest) == 5 and rest[4] == "serialPort" and method == "GET":
                    if inst is None or last(inst["zone"]) != z:
                        raise not_found("projects/%s/zones/%s/instances/%s" % (p, z, name))
                    text = m.serial.get(name, "")
                    start = min(int(query.get("start", 0)), len(text))
                    return {"kind": "compute#serialPortOutput", "contents": text[start:],
                            "start": str(start), "next": str(len(text)),
                            "selfLink": m.url("projects/%s/zones/%s/instances/%s/serialPort" % (p, z, name))}
                if len(rest) == 5 and rest[4] == "getGuestAttributes" and method == "GET":
                    return m.guest_attributes(p, z, name, query.get("queryPath", ""))
                if len(rest) == 4 and method == "GET":
                    if inst is None or last(inst["zone"]) != z:
                        raise not_found("projects/%s/zones/%s/instances/%s" % (p, z, name))
                    return inst
                if len(rest) == 4 and method == "DELETE":
                    failure = m.injected("delete", "instances", name)
                    if failure:
                        m.raise_injected(failure)
                    target, scope = m.delete(p, "instances", name, "zones/" + z)
                    return m.operation(p, scope, "delete", target)
                if len(rest) == 5 and rest[4] == "attachDisk" and method == "POST":
                    target, scope = m.attach_disk(p, z, name, body)
                    return m.operation(p, scope, "attachDisk", target)
                if len(rest) == 5 and rest[4] == "detachDisk" and method == "POST":
                    target, scope = m.detach_disk(p, z, name, query.get("deviceName", ""))
                    return m.operation(p, scope, "detachDisk", target)
                if len(rest) == 5 and rest[4] == "setDiskAutoDelete" and method == "POST":
                    if inst is None or last(inst["zone"]) != z:
                        raise not_found("projects/%s/zones/%s/instances/%s" % (p, z, name))
                    for d in inst["disks"]:
                        if d["deviceName"] == query.get("deviceName"):
                            d["autoDelete"] = query.get("autoDelete") == "true"
                    return m.operation(p, "zones/" + z, "setDiskAutoDelete", "projects/%s/zones/%s/instances/%s" % (p, z, name))
        raise ApiError(404, "notFound", "The mock does not serve %s %s" % (method, path))

    # -- test controls (not Google's API) --
    def control(self, method, path, body):
        m = self.mock
        body = body or {}
        with m.lock:
            if path == "/mock/state" and method == "GET":
                return m.state()
            if path == "/mock/hosts" and method == "POST":
                # {instance: {internalIp, externalIp, hostkeys: {type: base64}}}
                m.hosts.update(body)
                return {"hosts": m.hosts}
            if path == "/mock/serial" and method == "POST":
                # {instance, text}: appended to its serial console (port 1)
                m.serial[body["instance"]] = m.serial.get(body["instance"], "") + body["text"]
                return {"ok": True}
            if path == "/mock/failures" and method == "POST":
                # [{kind, name?, method?: insert|delete, nth?: 1, times?: 1|"always",
                #   error: quota|unavailable|notReady|invalid|operation}]
                m.failures.extend(body if isinstance(body, list) else [body])
                return {"failures": m.failures}
            if path == "/mock/project" and method == "POST":
                # {project, metadata?: {k: v}, quotas?: {METRIC: limit},
                #  regionQuotas?: {region: {METRIC: limit}}}
                proj = m.project(body["project"])
                proj["metadata"].update(body.get("metadata", {}))
                proj["quotas"].update(body.get("quotas", {}))
                for region, quotas in body.get("regionQuotas", {}).items():
                    proj["regionQuotas"].setdefault(region, {}).update(quotas)
                return m.project_view(body["project"])
            if path == "/mock/org-policies" and method == "POST":
                # {constraint: enforced}
                m.org_policies.update(body)
                return m.org_policies
            if path == "/mock/config" and method == "POST":
                # {hostkeyDelayReads?, deprecatedMachineTypes?: {type: {state, replacement}},
                #  tokenError?: "invalid_grant" | null, revokeTokens?: true}
                if "hostkeyDelayReads" in body:
                    m.hostkey_delay_reads = int(body["hostkeyDelayReads"])
                m.deprecated_types.update(body.get("deprecatedMachineTypes", {}))
                if "tokenError" in body:
                    m.token_error = body["tokenError"]
                if body.get("revokeTokens"):
                    m.tokens.clear()
                return {"ok": True}
            if path == "/mock/resource" and method == "POST":
                # Makes a resource directly, as someone else would have:
                # {project, kind: networks|..., zone?|region?, body}
                p, kind, rbody = body["project"], body["kind"], body["body"]
                if kind == "networks":
                    m.insert_network(p, rbody)
                elif kind == "subnetworks":
                    m.insert_subnetwork(p, body["region"], rbody)
                elif kind == "firewalls":
                    m.insert_firewall(p, rbody)
                elif kind == "routes":
                    m.insert_route(p, rbody)
                elif kind == "instances":
                    m.insert_instance(p, body["zone"], rbody)
                elif kind == "targetPools":
                    m.insert_target_pool(p, body["region"], rbody)
                elif kind == "forwardingRules":
                    m.insert_forwarding_rule(p, body["region"], rbody)
                elif kind == "disks":
                    m.insert_disk(p, body["zone"], rbody)
                return {"ok": True}
        raise ApiError(404, "notFound", "no control %s %s" % (method, path))


class TokenError(Exception):
    def __init__(self, body):
        super().__init__(body)
        self.body = body


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--exit-on-stdin-eof", action="store_true",
                        help="stop when stdin closes (the test that started it died)")
    args = parser.parse_args()
    os.makedirs(args.state_dir, exist_ok=True)
    mock = Mock(args.state_dir)
    Handler.mock = mock
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    mock.base = "http://127.0.0.1:%d/compute/v1/" % port

    def stop(*_):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.exit_on_stdin_eof:
        def watch():
            while os.read(0, 4096):
                pass
            stop()
        threading.Thread(target=watch, daemon=True).start()
    print(port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
