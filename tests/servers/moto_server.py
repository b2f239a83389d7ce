"""A real moto server (S3 + CodeDeploy over the AWS wire protocol) for runway's tests.

moto leaves deployments in `Created` forever and lacks a few CodeDeploy calls, so this
harness plays the part of the EC2 fleet's agents and fills those gaps:

- GetDeployment moves a deployment Created -> InProgress -> Succeeded, or Failed when
  its description contains FAIL (with errorInformation, as AWS reports it);
- RegisterApplicationRevision, ListDeploymentTargets and BatchGetDeploymentTargets
  exist (the latter report the failing lifecycle event of a failed deployment);
- requests for buckets named `denied-*`, and CodeDeploy calls for applications named
  `denied-*`, get AccessDenied, as a user without the IAM permission would;
- GET /_runway/revisions lists registered revisions, for assertions.

Usage: python moto_server.py [PORT]   (0 or nothing: a free port). Prints
"PORT <n>" on stdout once it listens on 127.0.0.1.
"""
import json
import sys

from moto.codedeploy import models as cdm
from moto.codedeploy import responses as cdr
from moto.core.responses import ActionResult, EmptyResult
from moto.core.utils import utcnow
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server

REVISIONS = []

_orig_get = cdm.CodeDeployBackend.get_deployment


def get_deployment(self, deployment_id):
    d = _orig_get(self, deployment_id)
    failing = "FAIL" in (d.description or "")
    nxt = {"Created": "InProgress", "InProgress": "Failed" if failing else "Succeeded"}.get(d.status)
    if nxt:
        if d.status == "Created":
            d.start_time = utcnow()
        d.status = nxt
        if nxt in ("Succeeded", "Failed"):
            d.complete_time = utcnow()
    return d


cdm.CodeDeployBackend.get_deployment = get_deployment

_orig_info = cdr._deployment_info


def deployment_info(deployment):
    out = _orig_info(deployment)
    if deployment.status == "Failed":
        out["errorInformation"] = {
            "code": "HEALTH_CONSTRAINTS",
            "message": "The overall deployment failed because too many individual instances failed deployment.",
        }
    return out


cdr._deployment_info = deployment_info


def register_application_revision(self):
    app = self._get_param("applicationName")
    if app not in self.codedeploy_backend.applications:
        raise cdm.ApplicationDoesNotExistException(f"The application {app} does not exist with the user or AWS account.")
    REVISIONS.append({"applicationName": app, "revision": self._get_param("revision"),
                      "description": self._get_param("description")})
    return EmptyResult()


def list_deployment_targets(self):
    return ActionResult({"targetIds": ["i-0123456789abcdef0"]})


def batch_get_deployment_targets(self):
    dep_id = self._get_param("deploymentId")
    d = self.codedeploy_backend.deployments.get(dep_id)
    failed = d is not None and d.status == "Failed"
    events = []
    for name in ["ApplicationStop", "DownloadBundle", "BeforeInstall", "Install", "AfterInstall",
                 "ApplicationStart", "ValidateService"]:
        status = "Succeeded"
        diag = None
        if failed and name == "ValidateService":
            status = "Failed"
            diag = {"errorCode": "ScriptFailed", "scriptName": "health.sh",
                    "message": "Script at specified location: health.sh run as user ec2-user failed with exit code 1",
                    "logTail": "> not healthy\n"}
        elif failed and name in ("ApplicationStart",):
            status = "Succeeded"
        ev = {"lifecycleEventName": name, "status": status}
        if diag:
            ev["diagnostics"] = diag
        events.append(ev)
    target = {"deploymentId": dep_id, "targetId": "i-0123456789abcdef0",
              "status": "Failed" if failed else "Succeeded", "lifecycleEvents": events}
    return ActionResult({"deploymentTargets": [{"deploymentTargetType": "InstanceTarget", "instanceTarget": target}]})


cdr.CodeDeployResponse.register_application_revision = register_application_revision
cdr.CodeDeployResponse.list_deployment_targets = list_deployment_targets
cdr.CodeDeployResponse.batch_get_deployment_targets = batch_get_deployment_targets


class Harness:
    """WSGI middleware: AccessDenied for `denied-*`, and the revisions endpoint."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/_runway/revisions":
            body = json.dumps(REVISIONS).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target.startswith("CodeDeploy_"):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            raw = environ["wsgi.input"].read(length) if length else b""
            try:
                payload = json.loads(raw or b"{}")
            except ValueError:
                payload = {}
            if str(payload.get("applicationName", "")).startswith("denied-"):
                body = json.dumps({"__type": "AccessDeniedException",
                                   "message": "User: arn:aws:iam::123456789012:user/ci is not authorized to perform: codedeploy:CreateDeployment"}).encode()
                start_response("400 Bad Request", [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(body)))])
                return [body]
            import io
            environ["wsgi.input"] = io.BytesIO(raw)
        elif path.startswith("/denied-"):
            body = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
                    b'<Message>Access Denied</Message></Error>')
            start_response("403 Forbidden", [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
            return [body]
        return self.app(environ, start_response)


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server("127.0.0.1", port, Harness(app), threaded=True)
    print(f"PORT {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
