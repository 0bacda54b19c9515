"""Lua scripts for the job status transitions.

Each script runs atomically in Redis. Two deliveries of the same job message (a redelivery after
a worker process was killed, racing a late write from the killed attempt) can therefore never
both win, and neither can a cancel racing a start. A job leaves "running" for a final status
exactly once, and only the attempt holding the current token may move it there.

Common keys: KEYS[1] the job hash, KEYS[2] the hash of current counts by "type|status",
KEYS[3] the hash of finished totals, KEYS[4] the duration histogram hash.
"""

# Moves the job to a final status and keeps the counters in step. Shared by the scripts below.
_FINALISE = """
local function finalise(job, status, now, fields)
  local previous = redis.call('HGET', job, 'status')
  local jtype = redis.call('HGET', job, 'type')
  redis.call('HSET', job, 'status', status, 'finished_at', now)
  for i = 1, #fields, 2 do
    redis.call('HSET', job, fields[i], fields[i + 1])
  end
  redis.call('HINCRBY', KEYS[2], jtype .. '|' .. previous, -1)
  redis.call('HINCRBY', KEYS[2], jtype .. '|' .. status, 1)
  redis.call('HINCRBY', KEYS[3], jtype .. '|' .. status, 1)
  local started = redis.call('HGET', job, 'started_at')
  if started and started ~= '' then
    local duration = tonumber(now) - tonumber(started)
    if duration < 0 then duration = 0 end
    for i = 1, #BUCKETS do
      if duration <= BUCKETS[i] then
        redis.call('HINCRBY', KEYS[4], jtype .. '|' .. BUCKETS[i], 1)
      end
    end
    redis.call('HINCRBY', KEYS[4], jtype .. '|+Inf', 1)
    redis.call('HINCRBY', KEYS[4], jtype .. '|count', 1)
    redis.call('HINCRBYFLOAT', KEYS[4], jtype .. '|sum', duration)
  end
end
local function is_final(status)
  return status == 'succeeded' or status == 'failed' or status == 'cancelled'
end
"""

# Upper bounds in seconds of the job duration histogram; +Inf is added by the script.
DURATION_BUCKETS_S: tuple[float, ...] = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

_PRELUDE = "local BUCKETS = {" + ", ".join(str(b) for b in DURATION_BUCKETS_S) + "}\n" + _FINALISE

# ARGV: token, now, worker, max_attempts, error JSON for a job past max_attempts.
# Returns {outcome, detail}: 'run' (attempt number), 'final' (the status), 'cancelled',
# 'exhausted' (the number of lost deliveries) or 'missing'.
#
# A job found 'running' was claimed by a delivery that neither finished nor requeued it: its
# worker process was lost. Only those deliveries count against max_attempts ('lost_attempts').
# A retry after a Redis error requeues the job first (REQUEUE), so it is found 'queued' and
# does not count.
START = (
    _PRELUDE
    + """
local job = KEYS[1]
local status = redis.call('HGET', job, 'status')
if not status then return {'missing', ''} end
if is_final(status) then return {'final', status} end
if redis.call('HGET', job, 'cancel_requested') == '1' then
  finalise(job, 'cancelled', ARGV[2], {'message', 'cancelled'})
  return {'cancelled', ''}
end
local attempts = tonumber(redis.call('HGET', job, 'attempts') or '0')
if status == 'running' then
  local lost = tonumber(redis.call('HGET', job, 'lost_attempts') or '0') + 1
  redis.call('HSET', job, 'lost_attempts', lost)
  if lost >= tonumber(ARGV[4]) then
    finalise(job, 'failed', ARGV[2], {'error', ARGV[5], 'token', ''})
    return {'exhausted', tostring(lost)}
  end
else
  local jtype = redis.call('HGET', job, 'type')
  redis.call('HINCRBY', KEYS[2], jtype .. '|' .. status, -1)
  redis.call('HINCRBY', KEYS[2], jtype .. '|running', 1)
end
redis.call('HSET', job, 'status', 'running', 'token', ARGV[1], 'worker', ARGV[3],
           'attempts', attempts + 1, 'progress', '0', 'message', 'started',
           'started_at', ARGV[2])
return {'run', tostring(attempts + 1)}
"""
)

# ARGV: token ('' accepts any attempt), final status, now, then field/value pairs to set.
# Returns 1 when this call moved the job to the final status, 0 otherwise.
FINISH = (
    _PRELUDE
    + """
local job = KEYS[1]
local status = redis.call('HGET', job, 'status')
if status ~= 'running' then return 0 end
if ARGV[1] ~= '' and redis.call('HGET', job, 'token') ~= ARGV[1] then return 0 end
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
fields[#fields + 1] = 'token'
fields[#fields + 1] = ''
finalise(job, ARGV[2], ARGV[3], fields)
return 1
"""
)

# ARGV: now, error JSON. Fails a job that is still queued (used for jobs the API never enqueued).
FAIL_QUEUED = (
    _PRELUDE
    + """
local job = KEYS[1]
if redis.call('HGET', job, 'status') ~= 'queued' then return 0 end
finalise(job, 'failed', ARGV[1], {'error', ARGV[2]})
return 1
"""
)

# ARGV: now. Returns the outcome: 'missing', 'cancelled' (a queued job, now final),
# 'cancelling' (a running job, which stops at its next step) or 'already_' followed by the final
# status it already had.
CANCEL = (
    _PRELUDE
    + """
local job = KEYS[1]
local status = redis.call('HGET', job, 'status')
if not status then return 'missing' end
if status == 'queued' then
  finalise(job, 'cancelled', ARGV[1], {'message', 'cancelled while queued',
                                       'cancel_requested', '1'})
  return 'cancelled'
end
if status == 'running' then
  redis.call('HSET', job, 'cancel_requested', '1')
  return 'cancelling'
end
return 'already_' .. status
"""
)

# ARGV: token, message. Puts a running job back to queued before a retry after a transient error.
REQUEUE = """
local job = KEYS[1]
if redis.call('HGET', job, 'status') ~= 'running' then return 0 end
if redis.call('HGET', job, 'token') ~= ARGV[1] then return 0 end
local jtype = redis.call('HGET', job, 'type')
redis.call('HINCRBY', KEYS[2], jtype .. '|running', -1)
redis.call('HINCRBY', KEYS[2], jtype .. '|queued', 1)
redis.call('HSET', job, 'status', 'queued', 'token', '', 'message', ARGV[2])
return 1
"""

# ARGV: token, fraction, message. Returns 1 when written (the attempt is still current).
PROGRESS = """
local job = KEYS[1]
if redis.call('HGET', job, 'status') ~= 'running' then return 0 end
if redis.call('HGET', job, 'token') ~= ARGV[1] then return 0 end
redis.call('HSET', job, 'progress', ARGV[2], 'message', ARGV[3])
return 1
"""
