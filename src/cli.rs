//! The `corral` command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use corral_collector::config::Overrides;

const OVERRIDES: &str = "Configuration overrides";

/// The command line; its `about` is the package description.
#[derive(Debug, Parser)]
#[command(
    name = "corral",
    version = crate::VERSION,
    about,
    long_about = None,
    // A flag given twice takes its last value, as with most daemons' wrappers.
    args_override_self = true,
    after_help = "Every configuration key can also be set by an environment variable \
                  CORRAL_<SECTION>_<KEY> (top-level keys: CORRAL_<KEY>), e.g. \
                  CORRAL_STATSD_FLUSH_INTERVAL=5s. Precedence: flag > environment > file > default."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Configuration file (TOML); without one, built-in defaults are used
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,

    /// UDP addresses for StatsD, comma-separated [statsd.listen]
    #[arg(long, value_name = "ADDR[,ADDR...]", value_delimiter = ',', global = true, help_heading = OVERRIDES)]
    pub statsd_listen: Option<Vec<String>>,

    /// Address of the HTTP API [api.listen]
    #[arg(long, value_name = "ADDR", global = true, help_heading = OVERRIDES)]
    pub api_listen: Option<String>,

    /// Mesos agent URL; "" disables the agent source [agent.url]
    #[arg(long, value_name = "URL", global = true, help_heading = OVERRIDES)]
    pub agent_url: Option<String>,

    /// Kafka brokers, comma-separated; "" writes local Avro files instead [kafka.brokers]
    #[arg(long, value_name = "B[,B...]", value_delimiter = ',', global = true, help_heading = OVERRIDES)]
    pub kafka_brokers: Option<Vec<String>>,

    /// StatsD flush interval, e.g. 10s [statsd.flush_interval]
    #[arg(long, value_name = "DUR", global = true, help_heading = OVERRIDES)]
    pub flush_interval: Option<String>,

    /// Directory for local state and spooled batches [data_dir]
    #[arg(long, value_name = "DIR", global = true, help_heading = OVERRIDES)]
    pub data_dir: Option<String>,

    /// trace|debug|info|warn|error, or a tracing filter like "info,corral_statsd=debug" [log_level]
    #[arg(long, value_name = "LEVEL", global = true, help_heading = OVERRIDES)]
    pub log_level: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Run the daemon (the default when no command is given)
    Run,
    /// Print the effective configuration as TOML, then check that it can run here: listen
    /// addresses free, data_dir writable, agent and Kafka brokers reachable. Exit 0 when
    /// nothing fails (warnings allowed), 1 when a check fails, 2 for an invalid configuration
    CheckConfig {
        /// Only validate the configuration; probe nothing (e.g. while Corral runs and holds
        /// its ports)
        #[arg(long)]
        no_probe: bool,
    },
    /// Print the MetricLists of an Avro file or a Kafka spool segment as JSON lines
    AvroDump {
        /// An Avro container file (data_dir/avro/*.avro) or a spool segment (data_dir/spool/*.seg)
        file: PathBuf,
    },
}

impl Cli {
    /// The flags that override configuration keys, for `Config::load`.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            statsd_listen: self.statsd_listen.clone(),
            api_listen: self.api_listen.clone(),
            agent_url: self.agent_url.clone(),
            kafka_brokers: self.kafka_brokers.clone(),
            flush_interval: self.flush_interval.clone(),
            data_dir: self.data_dir.clone(),
            log_level: self.log_level.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("corral").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_arguments_run_on_defaults() {
        let cli = parse(&[]);
        assert_eq!(cli.command, None);
        assert_eq!(cli.config, None);
        assert_eq!(cli.overrides(), Overrides::default());
    }

    #[test]
    fn subcommands() {
        assert_eq!(parse(&["run"]).command, Some(Command::Run));
        let cli = parse(&["check-config"]);
        assert_eq!(cli.command, Some(Command::CheckConfig { no_probe: false }));
        assert_eq!(
            parse(&["check-config", "--no-probe"]).command,
            Some(Command::CheckConfig { no_probe: true })
        );
        assert!(Cli::try_parse_from(["corral", "--no-probe"]).is_err());
        assert!(Cli::try_parse_from(["corral", "check-config", "extra"]).is_err());
        assert!(Cli::try_parse_from(["corral", "serve"]).is_err());
        assert_eq!(
            parse(&["avro-dump", "/var/lib/corral/avro/x.avro"]).command,
            Some(Command::AvroDump {
                file: PathBuf::from("/var/lib/corral/avro/x.avro")
            })
        );
        assert!(Cli::try_parse_from(["corral", "avro-dump"]).is_err());
    }

    #[test]
    fn config_before_or_after_the_subcommand() {
        for args in [
            &["--config", "/etc/corral.toml", "check-config"][..],
            &["check-config", "--config", "/etc/corral.toml"],
            &["--config=/etc/corral.toml"],
            &["run", "--config", "/etc/corral.toml"],
        ] {
            assert_eq!(
                parse(args).config.as_deref(),
                Some(std::path::Path::new("/etc/corral.toml")),
                "{args:?}"
            );
        }
    }

    #[test]
    fn every_flag_becomes_an_override() {
        let cli = parse(&[
            "--statsd-listen",
            "127.0.0.1:8125,[::1]:8125",
            "--api-listen",
            "0.0.0.0:9000",
            "--agent-url",
            "http://10.0.0.1:5051",
            "--kafka-brokers",
            "a:9092,b:9092",
            "--flush-interval",
            "5s",
            "--data-dir",
            "/tmp/corral",
            "--log-level",
            "debug",
            "check-config",
        ]);
        assert_eq!(
            cli.overrides(),
            Overrides {
                statsd_listen: Some(vec!["127.0.0.1:8125".into(), "[::1]:8125".into()]),
                api_listen: Some("0.0.0.0:9000".into()),
                agent_url: Some("http://10.0.0.1:5051".into()),
                kafka_brokers: Some(vec!["a:9092".into(), "b:9092".into()]),
                flush_interval: Some("5s".into()),
                data_dir: Some("/tmp/corral".into()),
                log_level: Some("debug".into()),
            }
        );
    }

    #[test]
    fn lists_accumulate_over_repeated_flags() {
        let cli = parse(&["--kafka-brokers=a:9092", "--kafka-brokers", "b:9092,c:9092"]);
        assert_eq!(
            cli.overrides().kafka_brokers,
            Some(vec!["a:9092".into(), "b:9092".into(), "c:9092".into()])
        );
    }

    #[test]
    fn empty_values_clear_the_key() {
        let cli = parse(&["--agent-url", "", "--kafka-brokers", ""]);
        let o = cli.overrides();
        assert_eq!(o.agent_url.as_deref(), Some(""));
        // Config::load drops empty list items, so this means "no brokers".
        assert!(o.kafka_brokers.unwrap().iter().all(|b| b.trim().is_empty()));
    }

    #[test]
    fn version_and_help() {
        let err = Cli::try_parse_from(["corral", "--version"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DisplayVersion);
        assert_eq!(
            err.to_string(),
            format!(
                "corral {} (commit {})\n",
                env!("CARGO_PKG_VERSION"),
                env!("CORRAL_COMMIT")
            )
        );

        let err = Cli::try_parse_from(["corral", "--help"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DisplayHelp);
        let help = err.to_string();
        for needle in [
            "check-config",
            "--config <FILE>",
            "--statsd-listen",
            "[statsd.flush_interval]",
            "CORRAL_<SECTION>_<KEY>",
        ] {
            assert!(help.contains(needle), "{needle:?} not in\n{help}");
        }
    }

    #[test]
    fn unknown_flags_and_missing_values_are_errors() {
        assert_eq!(
            Cli::try_parse_from(["corral", "--flush"])
                .unwrap_err()
                .kind(),
            ErrorKind::UnknownArgument
        );
        assert!(Cli::try_parse_from(["corral", "--api-listen"]).is_err());
    }
}
