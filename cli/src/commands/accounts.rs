//! register, login, logout, whoami.

use std::io::{IsTerminal, Read};

use berth::http::wire::{
    Email, LoginRequest, Me, Password, RefreshRequest, RegisterRequest, TokenPair, UserEnvelope,
};

use super::{Ctx, Result};
use crate::client::session_from;
use crate::config::{self, Config, DefaultOrg, Session};
use crate::error::CliError;
use crate::output;

pub async fn register(ctx: &Ctx, email: String, name: String, stdin: bool) -> Result {
    let email = Email::parse(&email).map_err(|m| CliError::Usage(format!("--email: {m}")))?;
    let password = read_password(stdin, true)?;
    let password =
        Password::parse(&password).map_err(|m| CliError::Usage(format!("password: {m}")))?;
    let body = RegisterRequest {
        email,
        password,
        name,
    };
    let reply = ctx
        .client
        .send_anonymous("/v1/auth/register", &body)
        .await
        .map_err(|e| e.with_flags(&[("email", "--email"), ("name", "--name")]))?;
    ctx.print(&reply, |u: UserEnvelope| {
        anstream::println!(
            "Registered {} ({}). Next: berth login --email {}",
            u.user.email,
            u.user.name,
            u.user.email
        )
    })
}

pub async fn login(ctx: &Ctx, email: String, stdin: bool) -> Result {
    let password = read_password(stdin, false)?;
    if password.chars().count() > Password::MAX_CHARS {
        return Err(CliError::Usage(format!(
            "password: must be at most {} characters",
            Password::MAX_CHARS
        )));
    }
    let body = LoginRequest {
        email: email.clone(),
        password,
    };
    let pair: TokenPair = ctx
        .client
        .send_anonymous("/v1/auth/login", &body)
        .await?
        .parse()?;
    let session = Session {
        email: email.clone(),
        ..session_from(pair)?
    };
    let access = session.access_token.clone();
    let path = &ctx.client.config_path;
    {
        let _lock = config::lock(path)?;
        // Logging in is the way out of a broken file: it is replaced.
        let mut c = config::load(path).unwrap_or_else(|e| {
            eprintln!("note: {e}; replacing it");
            Config::default()
        });
        let same_login = c.server.as_deref() == Some(ctx.client.server.as_str())
            && c.session.as_ref().is_some_and(|s| s.email == email);
        if !same_login {
            c.org = None;
        }
        c.server = Some(ctx.client.server.clone());
        c.session = Some(session);
        config::save(path, &c)?;
    }
    // With one organization and no default yet, that one is the default.
    // Checked with the new login's own token, whatever BERTH_TOKEN holds.
    let me: Me = ctx.client.get_as("/v1/me", &access).await?.parse()?;
    let c = {
        let _lock = config::lock(path)?;
        let mut c = config::load(path)?;
        if let ([only], None) = (me.memberships.as_slice(), &c.org) {
            c.org = Some(DefaultOrg {
                id: only.org_id,
                name: only.org_name.clone(),
            });
            config::save(path, &c)?;
        }
        c
    };
    ctx.say(format!(
        "Logged in to {} as {}.",
        ctx.client.server,
        output::bold(&me.user.email)
    ));
    if let Some(o) = &c.org {
        ctx.say(format!("Organization: {}", o.name));
    }
    if ctx.client.uses_env_token() {
        eprintln!("note: BERTH_TOKEN is set, so later commands use it instead of this login");
    }
    Ok(())
}

pub async fn logout(ctx: &Ctx) -> Result {
    if ctx.client.uses_env_token() {
        return Err(CliError::Usage(
            "BERTH_TOKEN is set: there is no stored login to end (unset it, or revoke the key)"
                .into(),
        ));
    }
    let path = &ctx.client.config_path;
    let stored = config::load(path)?;
    let Some(session) = stored.session else {
        ctx.say("Not logged in.");
        return Ok(());
    };
    if let Some(server) = stored.server.filter(|s| *s != ctx.client.server) {
        return Err(CliError::Usage(format!(
            "you are logged in to {server}, not {}: run berth logout without --server",
            ctx.client.server
        )));
    }
    // The server revokes the whole refresh-token family; a spent token of the family names
    // it as well as the current one, so a concurrent refresh cannot make this miss.
    let body = RefreshRequest {
        refresh_token: session.refresh_token,
    };
    let revoked = match ctx.client.post("/v1/auth/logout", &body).await {
        Ok(_) => true,
        Err(CliError::Login(_)) => false,
        Err(e) => return Err(e),
    };
    let _lock = config::lock(path)?;
    let mut c = config::load(path)?;
    c.session = None;
    c.org = None;
    config::save(path, &c)?;
    if revoked {
        ctx.say(format!("Logged out of {}.", ctx.client.server));
    } else {
        ctx.say("Logged out (the server had already ended this login).");
    }
    Ok(())
}

pub async fn whoami(ctx: &Ctx) -> Result {
    let reply = ctx.client.get("/v1/me").await?;
    let default = config::load(&ctx.client.config_path)?.org.map(|o| o.id);
    ctx.print(&reply, |me: Me| {
        anstream::println!(
            "{} ({}) on {}",
            output::bold(&me.user.email),
            me.user.name,
            ctx.client.server
        );
        if me.memberships.is_empty() {
            anstream::println!("No organizations yet: berth org create NAME, or berth join CODE.");
            return;
        }
        anstream::println!();
        let rows = me
            .memberships
            .iter()
            .map(|m| {
                let mark = if Some(m.org_id) == default { "*" } else { "" };
                crate::row![
                    mark.to_string(),
                    m.org_name.clone(),
                    m.role.clone(),
                    m.org_id.to_string(),
                ]
            })
            .collect();
        output::list(
            ctx.out,
            vec![],
            &["CURRENT", "ORGANIZATION", "ROLE", "ID"],
            rows,
        );
    })
}

/// The password: all of standard input with `--password-stdin` (one trailing newline
/// dropped), else a hidden prompt on the terminal (twice when choosing one).
fn read_password(stdin: bool, confirm: bool) -> Result<String> {
    if stdin {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                CliError::Usage("--password-stdin: standard input is not UTF-8 text".into())
            } else {
                CliError::Other(format!("cannot read the password from stdin: {e}"))
            }
        })?;
        let s = s.strip_suffix('\n').unwrap_or(&s);
        let s = s.strip_suffix('\r').unwrap_or(s);
        if s.is_empty() {
            return Err(CliError::Usage(
                "--password-stdin: standard input is empty".into(),
            ));
        }
        return Ok(s.to_string());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(
            "no terminal to ask for the password on: use --password-stdin".into(),
        ));
    }
    let ask = |prompt: &str| {
        rpassword::prompt_password(prompt)
            .map_err(|e| CliError::Other(format!("cannot read the password: {e}")))
    };
    let first = ask("Password: ")?;
    if confirm && ask("Password (again): ")? != first {
        return Err(CliError::Usage("the two passwords differ".into()));
    }
    Ok(first)
}
