import json, sys, time, threading, urllib.request, urllib.parse, uuid
B = sys.argv[1]
def req(method, path, body=None, q=None):
    url = B + path + ("?" + urllib.parse.urlencode(q) if q else "")
    data = json.dumps(body).encode() if body is not None else None
    r = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(r) as resp:
            t = resp.read().decode(); return resp.status, (json.loads(t) if t else None)
    except urllib.error.HTTPError as e:
        t = e.read().decode()
        try: return e.code, json.loads(t)
        except Exception: return e.code, t
import subprocess
bpmn = open("/work/main/bpmn/message-correlation.bpmn","rb").read()
bnd = "x"+uuid.uuid4().hex
body = (f"--{bnd}\r\nContent-Disposition: form-data; name=\"deployment-name\"\r\n\r\nfacts\r\n--{bnd}\r\nContent-Disposition: form-data; name=\"d\"; filename=\"p.bpmn\"\r\n\r\n").encode()+bpmn+f"\r\n--{bnd}--\r\n".encode()
r = urllib.request.Request(B+"/deployment/create", data=body, method="POST", headers={"Content-Type": f"multipart/form-data; boundary={bnd}"})
urllib.request.urlopen(r).read()
M="camundaWorkerFollowUp"
def start(n, pfx):
    ids=[]
    for i in range(n):
        s, b = req("POST", "/process-definition/key/message_correlation/start", {"businessKey": f"{pfx}{i}"})
        ids.append(b["id"])
    return ids
def fetch_complete(n, until):
    s, tasks = req("POST", "/external-task/fetchAndLock", {"workerId":"w","maxTasks":n,"topics":[{"topicName":"messageSending","lockDuration":60000}]})
    out = {}
    for t in tasks:
        v = f"owed:messageSending:{until}:{t['id']}"
        s,_ = req("POST", f"/external-task/{t['id']}/complete", {"workerId":"w","variables":{M:{"value":v,"type":"String"}}})
        out[t["processInstanceId"]] = (t["id"], v, t["businessKey"])
    return out
ids = start(4, "f")
now = int(time.time()*1000)
done = fetch_complete(10, now - 1000)
print("completed", len(done))
# range query
s, b = req("POST", "/variable-instance", {"variableName": M, "variableValues":[{"name":M,"operator":"gteq","value":"owed:messageSending:"},{"name":M,"operator":"lt","value":f"owed:messageSending:{now}"}]})
print("range query", s, len(b) if isinstance(b,list) else b)
s, b = req("POST", "/variable-instance", {"variableName": M, "variableValues":[{"name":M,"operator":"lt","value":f"owed:messageSending:{now-5000}"},{"name":M,"operator":"gteq","value":"owed:messageSending:"}]})
print("range query before due", s, len(b) if isinstance(b,list) else b)
s, b = req("POST", "/variable-instance", {"variableName": M, "variableValues":[{"name":M,"operator":"like","value":"owed:messageSending:%"}]})
print("like query", s, len(b) if isinstance(b,list) else b)
if isinstance(b,list) and b: print("sample", {k:b[0].get(k) for k in ("name","value","processInstanceId","executionId","type")})
pis = list(done)
# CAS with pid + bk + keys
pi = pis[0]; tid, v, bk = done[pi]
msg = {"messageName":"sample_response","businessKey":bk,"processInstanceId":pi,"correlationKeys":{M:{"value":v,"type":"String"}},"processVariables":{M:{"value":f"delivered:{tid}","type":"String"}}}
print("cas", req("POST","/message",msg)[0], "repeat", req("POST","/message",msg))
print("marker after", req("GET","/variable-instance",q={"processInstanceIdIn":pi,"variableName":M})[1])
# concurrency: two simultaneous CAS on instance 2, many times
res=[]
def go(m): res.append(req("POST","/message",m))
ids2 = start(20, "c")
d2 = fetch_complete(50, now)
outcomes={}
for pi,(tid,v,bk) in d2.items():
    m = {"messageName":"sample_response","processInstanceId":pi,"correlationKeys":{M:{"value":v,"type":"String"}},"processVariables":{M:{"value":f"delivered:{tid}","type":"String"}}}
    res.clear()
    ts=[threading.Thread(target=go,args=(m,)) for _ in range(3)]
    [t.start() for t in ts]; [t.join() for t in ts]
    key = tuple(sorted((r[0], (r[1].get("type") if isinstance(r[1],dict) else "")) for r in res))
    outcomes[key]=outcomes.get(key,0)+1
print("concurrent outcomes", outcomes)
# history shows? count message-correlations: all instances completed?
s,b = req("GET","/history/process-instance/count",q={"processDefinitionKey":"message_correlation","finished":"true"})
print("finished", b)
# wrong value
pi = pis[1]; tid, v, bk = done[pi]
m = {"messageName":"sample_response","processInstanceId":pi,"correlationKeys":{M:{"value":v+"x","type":"String"}}}
print("wrong value", req("POST","/message",m))
# event-subscription by instance without name
print("subs", req("GET","/event-subscription",q={"processInstanceId":pi,"eventType":"message"})[1])
# incident on execution
s,subs = req("GET","/event-subscription",q={"processInstanceId":pi,"eventType":"message"})
ex = subs[0]["executionId"]
print("incident", req("POST",f"/execution/{ex}/create-incident",{"incidentType":"camundaWorkerFollowUp","configuration":tid,"message":"follow-up failed: test"}))
s,inc = req("GET","/incident",q={"incidentType":"camundaWorkerFollowUp","configuration":tid})
print("incident query", s, inc)
print("delete incident", req("DELETE", f"/incident/{inc[0]['id']}"))
print("after delete", req("GET","/incident",q={"incidentType":"camundaWorkerFollowUp","configuration":tid}))
# update variable of instance
print("put var", req("PUT", f"/process-instance/{pi}/variables/{M}", {"value": v.replace(str(now-1000), str(now+99999)), "type":"String"}))
