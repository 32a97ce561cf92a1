-- wrk load for bench_scale: the reports of a big production's wrappers at a steady rate.
-- Arguments (after --): jobs file ("R <id>" a running job, "S <id>" a submitted one about to
-- start, per line), wrk's thread count, and per second: heartbeats, step events, finals, starts;
-- then the connections and the first seq of the running jobs' next reports.
-- Each thread takes its own share of the jobs, so no two threads post for one job; its running
-- jobs are split into those that end (one final each) and those that report (heartbeats, steps,
-- round-robin), its submitted ones start (their first event). Every post is new: nothing is a
-- duplicate. The rate: each connection waits `delay()` between its posts (wrk has no clock in Lua).
local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

local LATENCY_MS = 4
local STEPS = {"RUNNING-03", "RUNNING-04", "RUNNING-05", "RUNNING-06"}

function init(args)
  local file, nthreads = args[1], tonumber(args[2])
  rates = {tonumber(args[3]), tonumber(args[4]), tonumber(args[5]), tonumber(args[6])}
  local connections, seconds, first_seq = tonumber(args[7]), tonumber(args[8]), tonumber(args[9])
  local total = rates[1] + rates[2] + rates[3] + rates[4]
  -- every connection of every thread posts once per `pause` ms plus the post's own time (a few ms,
  -- LATENCY_MS assumed): total posts/s over all of them
  pause = math.max(0, math.floor(1000 * connections / total - LATENCY_MS))
  local share = total / nthreads
  -- this thread's finals over the run, with room: each needs a job of its own
  local ending = math.ceil(rates[3] / nthreads * seconds * 1.3) + 1
  running, ends, starts, seqs = {}, {}, {}, {}
  local n = 0
  for line in io.lines(file) do
    if n % nthreads == tid then
      local kind, id = line:match("(%a) (%d+)")
      if kind == "S" then
        table.insert(starts, id)
      elseif #ends < ending then
        table.insert(ends, id)
      else
        table.insert(running, id)
        seqs[#running] = first_seq
      end
    end
    n = n + 1
  end
  next_run, next_end, next_start = 1, 1, 1
  sent = {0, 0, 0, 0}
  weights = {rates[1] / total, rates[2] / total, rates[3] / total, rates[4] / total}
  posts = 0
end

function delay()
  return pause
end

local function post(id, body)
  return wrk.format("POST", "/api/v1/jobs/" .. id .. "/events",
                    {["Authorization"] = "Bearer sbkj_bench" .. id, ["Content-Type"] = "application/json"},
                    body)
end

function request()
  posts = posts + 1
  -- the kind furthest behind its share of the posts so far (a steady mix, no randomness)
  local k, behind = 1, -1e9
  for i = 1, 4 do
    local d = posts * weights[i] - sent[i]
    if d > behind then k, behind = i, d end
  end
  if k == 3 and next_end > #ends then k = 1 end        -- no job left to end: a heartbeat
  if k == 4 and next_start > #starts then k = 1 end
  sent[k] = sent[k] + 1
  local now = os.time()
  if k == 3 then
    local id = ends[next_end]
    next_end = next_end + 1
    return post(id, string.format('{"attempt": 1, "seq": %d, "time": %d, "status": "done", "kind": "final", ' ..
                                  '"code": 0, "message": "finished", "metrics": {"wct_s": 21000.5}}', 13, now))
  elseif k == 4 then
    local id = starts[next_start]
    next_start = next_start + 1
    return post(id, string.format('{"attempt": 1, "seq": 1, "time": %d, "status": "running", "kind": "step", ' ..
                                  '"step": "RUNNING-01", "message": "node checks"}', now))
  end
  local j = next_run
  next_run = next_run % #running + 1
  local seq = seqs[j]
  seqs[j] = seq + 1
  if k == 2 then
    return post(running[j], string.format('{"attempt": 1, "seq": %d, "time": %d, "status": "running", ' ..
                                          '"kind": "step", "step": "%s"}', seq, now, STEPS[seq % 4 + 1]))
  end
  return post(running[j], string.format('{"attempt": 1, "seq": %d, "time": %d, "status": "running", ' ..
                                        '"kind": "heartbeat", "metrics": {"rss_mb": 812.5, "cpu_s": 33.1}}',
                                        seq, now))
end

function done(summary, latency, requests)
  local e = summary.errors
  local kinds = {0, 0, 0, 0}
  for _, thread in ipairs(threads) do
    local s = thread:get("sent")
    for i = 1, 4 do kinds[i] = kinds[i] + s[i] end
  end
  io.write(string.format('{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, ' ..
                         '"errors": %d, "status_errors": %d, "sent": {"heartbeat": %d, "step": %d, ' ..
                         '"final": %d, "start": %d}}\n', summary.requests, summary.duration,
                         latency:percentile(50), latency:percentile(99), latency.max,
                         e.connect + e.read + e.write + e.status + e.timeout, e.status,
                         kinds[1], kinds[2], kinds[3], kinds[4]))
end
