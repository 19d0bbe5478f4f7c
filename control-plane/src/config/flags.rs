//! A flag's name and variable, written once: clap's `#[arg(long = …, env = …)]` and the
//! errors that name the flag both read these constants.

/// One flag of the command line and the environment variable that can set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flag {
    /// The name without its dashes, as clap takes it.
    pub long: &'static str,
    pub env: &'static str,
    /// `--long (ENV)`: how errors name a flag.
    pub named: &'static str,
    /// `--long`: how the errors that predate `named` name theirs (their text is kept).
    pub bare: &'static str,
}

/// Declares `Flag` constants: `NAME: long = "long-name", env = "ENV_VAR";`.
macro_rules! flags {
    ($($(#[$doc:meta])* $name:ident: long = $long:literal, env = $env:literal;)*) => {
        $(
            $(#[$doc])*
            pub const $name: $crate::config::flags::Flag = $crate::config::flags::Flag {
                long: $long,
                env: $env,
                named: concat!("--", $long, " (", $env, ")"),
                bare: concat!("--", $long),
            };
        )*
    };
}
pub(crate) use flags;

#[cfg(test)]
mod tests {
    use clap::{Args, Command};

    use crate::config::ServeArgs;

    #[test]
    fn every_serve_flag_has_a_variable_and_a_name_of_its_own() {
        let command = ServeArgs::augment_args(Command::new("serve"));
        let mut longs = Vec::new();
        let mut envs = Vec::new();
        for arg in command.get_arguments() {
            let long = arg.get_long().expect("every serve argument is a flag");
            let env = arg.get_env().expect("every serve flag has a variable");
            longs.push(long.to_string());
            envs.push(env.to_string_lossy().into_owned());
        }
        assert!(longs.len() >= 36, "{longs:?}");
        for list in [&mut longs, &mut envs] {
            let n = list.len();
            list.sort();
            list.dedup();
            assert_eq!(list.len(), n, "a name is used twice: {list:?}");
        }
    }

    #[test]
    fn a_flag_is_named_with_its_variable() {
        assert_eq!(
            crate::config::http::LISTEN.named,
            "--listen (LIVEGATE_LISTEN)"
        );
        assert_eq!(crate::config::database::DB_POOL_SIZE.bare, "--db-pool-size");
    }
}
