-- wrk load for bench_server's ingest: POST heartbeats round-robin over the jobs of a
-- file ("<job id> <token>" per line), each job's seq growing by BATCH per post, so no
-- post is a duplicate. Arguments (after --): jobs file, raw (0|1; 1 posts to the
-- tokenless reference route that only bench/raw_app.py serves), batch, first seq,
-- wrk's thread count.
local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  local file, raw, first, nthreads = args[1], args[2] == "1", tonumber(args[4]), tonumber(args[5])
  batch = tonumber(args[3])
  jobs, seqs, next_job = {}, {}, 1
  local n = 0
  for line in io.lines(file) do
    -- every thread takes its own share of the jobs: no two threads post for one job
    if n % nthreads == tid then
      local id, token = line:match("(%d+) (%S+)")
      table.insert(jobs, {path = raw and ("/api/v1/bench/raw/" .. id .. "/events")
                                   or ("/api/v1/jobs/" .. id .. "/events"),
                          headers = {["Authorization"] = "Bearer " .. token,
                                     ["Content-Type"] = "application/json"}})
      seqs[#jobs] = first
    end
    n = n + 1
  end
end

local EVENT = '{"attempt": 1, "seq": %d, "time": %d, "status": "running", "kind": "heartbeat", ' ..
              '"metrics": {"rss_mb": 812.5, "cpu_s": 33.1}}'

function request()
  local k = next_job
  next_job = next_job % #jobs + 1
  local first = seqs[k]
  seqs[k] = first + batch
  local items = {}
  for s = first, first + batch - 1 do
    table.insert(items, string.format(EVENT, s, os.time()))
  end
  local body = batch > 1 and ("[" .. table.concat(items, ", ") .. "]") or items[1]
  return wrk.format("POST", jobs[k].path, jobs[k].headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
                         '"errors": %d}\n', summary.requests, summary.duration,
                         latency:percentile(50), latency:percentile(99),
                         e.connect + e.read + e.write + e.status + e.timeout))
end
