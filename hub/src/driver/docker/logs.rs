//! Container logs from the engine: the last lines (for error messages) and the live stream behind `docker-agent logs`.

use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptions as BollardLogsOptions;
use futures::{StreamExt, TryStreamExt};

use super::{DockerDriver, map_err};
use crate::driver::{LogChunk, LogStream, LogsOptions, Result};

impl DockerDriver {
    pub(super) async fn tail_lines(&self, container: &str, lines: usize) -> Result<Vec<String>> {
        let options = BollardLogsOptions {
            stdout: true,
            stderr: true,
            tail: lines.to_string(),
            ..Default::default()
        };
        let chunks: Vec<_> = self
            .docker
            .logs(container, Some(options))
            .try_collect()
            .await
            .map_err(map_err(format!("container {container}")))?;
        let text: String = chunks.iter().map(|c| c.to_string()).collect();
        Ok(text.lines().map(str::to_string).collect())
    }

    pub(super) fn log_stream(&self, container: &str, options: LogsOptions) -> LogStream {
        let what = format!("container {container}");
        let options = BollardLogsOptions {
            follow: options.follow,
            stdout: true,
            stderr: true,
            since: options.since.unwrap_or(0) as i32,
            timestamps: options.timestamps,
            tail: options
                .tail
                .map_or_else(|| "all".to_string(), |n| n.to_string()),
            ..Default::default()
        };
        Box::pin(
            self.docker
                .logs(container, Some(options))
                .map_err(move |e| map_err(what.clone())(e))
                .filter_map(|item| async move {
                    match item {
                        Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                            Some(Ok(LogChunk {
                                stderr: false,
                                data: message,
                            }))
                        }
                        Ok(LogOutput::StdErr { message }) => Some(Ok(LogChunk {
                            stderr: true,
                            data: message,
                        })),
                        Ok(LogOutput::StdIn { .. }) => None,
                        Err(e) => Some(Err(e)),
                    }
                }),
        )
    }
}
