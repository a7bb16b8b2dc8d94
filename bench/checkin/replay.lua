-- wrk script: sends each presigned check-in (fleet-sim presign) exactly once, then stops.
-- The updater refuses a replayed nonce, so a request must never be sent twice: the file is split
-- between wrk's threads (line i goes to thread i % WRK_THREADS) and a thread stops itself when
-- its share is used up. wrk still divides by the whole -d duration, so a run that used up its
-- share early only gives a lower bound (bench/checkin/run.sh checks for that): presign more
-- requests than the server can answer in the duration.
--
-- env: PRESIGNED=FILE (one escaped raw request per line), WRK_THREADS=N (the same as wrk -t)
local counter = 0

function setup(thread)
  thread:set("thread_index", counter)
  counter = counter + 1
end

local unescape = { r = "\r", n = "\n", ["\\"] = "\\" }
local requests = {}
local next_request = 0

function init(args)
  local path = os.getenv("PRESIGNED")
  local nthreads = tonumber(os.getenv("WRK_THREADS") or "")
  assert(path and nthreads, "set PRESIGNED and WRK_THREADS")
  local i = 0
  for line in io.lines(path) do
    if i % nthreads == thread_index then
      requests[#requests + 1] = line:gsub("\\(.)", unescape)
    end
    i = i + 1
  end
  assert(#requests > 0, "no presigned requests for thread " .. thread_index)
end

function request()
  next_request = next_request + 1
  if next_request > #requests then
    -- Out of requests: stop this thread. wrk still writes what we return on this connection, so
    -- return the last request again; the server refuses it as a replay (it shows as a non-2xx
    -- answer only if it arrives before the thread stops: at most one per connection).
    wrk.thread:stop()
    return requests[#requests]
  end
  return requests[next_request]
end
