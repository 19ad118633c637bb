"""The shared leaf of supervisor, front and worker: everything two of them must agree on.

It imports only the standard library and msgspec, and the three packages import it and never
each other. Import each name from the module that owns it (there are no re-exports here):

* what travels on each socket, one module per conversation, one tagged union per direction:
  `chat` (one chat, front <-> worker), `child_socket` (what every child answers: Ping,
  StatsQuery, Drain), `worker_socket` (a worker's account requests and the `WorkerRequest` /
  `WorkerReply` unions), `front_socket` (the worker set pushed to a front), `control_socket`
  (the supervisor's control socket: each `...Request` gets one `...Reply`, and carries
  `api_version`, from `version`), `keys` (named keys as the supervisor pushes them, and
  `lingma-gw keys`), `usage` (usage-ledger rows and their queries);
* `limits_table`: the host-wide per-key counters every front shares (a shared-memory file);
* `specs`: the settings each child is started with (built only by supervisor/specs.py);
* `vocabulary`: the states, error codes and exit codes every conversation uses;
* the machinery under them: `framing` (length-prefixed msgpack over Unix sockets), `channel`
  (a request-id multiplexed client), `inbox` (the per-stream mailbox);
* the policies every process shares: `backoff` (restart delays), `lifecycle` (process
  groups, parent-death guard), `logs` (JSON log lines, redaction), `snapshots` (metrics as
  IPC Structs), `tokens` (the one token estimate).
"""
