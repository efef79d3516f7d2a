-- Job records: every run of the cron programs (sync-rules, scan-queue, purge-queue,
-- import-spamlist) on every mail server, for `qguard status` and monitoring.

CREATE TABLE qguard.job_runs (
  id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  host         text NOT NULL,
  job          text NOT NULL,
  started_at   timestamptz NOT NULL,
  finished_at  timestamptz NOT NULL DEFAULT now(),
  ok           boolean NOT NULL,
  exit_code    integer NOT NULL,
  summary      jsonb,
  error        text
);
CREATE INDEX job_runs_host_job ON qguard.job_runs (host, job, finished_at DESC);
CREATE INDEX job_runs_finished ON qguard.job_runs (finished_at);
