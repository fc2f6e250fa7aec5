-- Tell every worker of a channel of a waiting job, as a script that leaves a job waiting with no worker to name
-- does (shared/keys.py "Named claims"): every registration of the schedule ends (nothing is handed off past the
-- job meanwhile), and the notice goes out. Sent by a worker named for a job it cannot take (worker/wakeup.py,
-- worker/engine/promises.py). Safe to apply twice: the registrations are gone, and a second notice wakes workers
-- that find nothing new.
-- KEYS: queue (the schedule).  ARGV: channel, notice ('j' or 'd<due ms>').
relay_unregister_idle(KEYS[1])
redis.call('{{PUBLISH}}', ARGV[1], ARGV[2])
return 1
