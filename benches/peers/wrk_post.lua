-- wrk script for benches/peers/run.sh (lib.sh run_wrk), benches/ab.sh and
-- benches/grpc_vs_http.sh: POSTs the body in the file named after `--` on
-- wrk's command line (JSON unless a later "Name: value" argument sets
-- Content-Type; each such argument is a request header), or GETs when that
-- name is "-", and writes wrk's summary as one JSON object into the file
-- named by $WRK_OUT (times in microseconds).
--   WRK_OUT=out.json wrk -t2 -c8 -d10s -s wrk_post.lua URL -- request.json
--   WRK_OUT=out.json wrk -t2 -c64 -d10s -s wrk_post.lua URL -- -
--   WRK_OUT=out.json wrk ... URL -- request.bin "Content-Type: application/octet-stream" "Inference-Header-Content-Length: 97"

function init(args)
  assert(args[1], "wrk_post.lua: no body file (or - for a GET)")
  if args[1] ~= "-" then
    local f = assert(io.open(args[1], "rb"), "wrk_post.lua: no body file " .. args[1])
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/json"
    wrk.body = f:read("*a")
    f:close()
  end
  for i = 2, #args do
    local name, value = string.match(args[i], "^([^:]+):%s*(.*)$")
    assert(name, "wrk_post.lua: a header argument is \"Name: value\", got " .. args[i])
    wrk.headers[name] = value
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local out = assert(io.open(assert(os.getenv("WRK_OUT"), "wrk_post.lua: WRK_OUT unset"), "w"))
  out:write(string.format(
    '{"duration_us": %d, "requests": %d, "status_errors": %d, "connect_errors": %d, "read_errors": %d, '
      .. '"write_errors": %d, "timeouts": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.duration, summary.requests, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
  out:close()
end
