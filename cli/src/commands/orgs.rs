//! Organizations, members, invites, API keys.

use berth::http::wire::{
    AcceptRequest, Accepted, ApiKey, CreateApiKeyRequest, CreateInviteRequest, CreateOrgRequest,
    CreatedApiKey, CreatedInvite, Invite, Me, Member, Org, RoleRequest,
};
use uuid::Uuid;

use super::{wire, Ctx, Result};
use crate::args::{ApiKeyCommand, InviteCommand, MembersCommand, OrgCommand};
use crate::config::{self, DefaultOrg};
use crate::error::CliError;
use crate::output::{self, wire_name};

pub async fn org(ctx: &Ctx, c: OrgCommand) -> Result {
    match c {
        OrgCommand::Create { name } => {
            let reply = ctx
                .client
                .post("/v1/orgs", &CreateOrgRequest { name })
                .await
                .map_err(|e| e.with_flags(&[("name", "NAME")]))?;
            let org: Org = reply.parse()?;
            let made_default = set_default_if_none(ctx, &org)?;
            ctx.print(&reply, |o: Org| {
                anstream::println!("Created organization {} ({}).", output::bold(&o.name), o.id);
                if made_default {
                    anstream::println!("It is now your default organization.");
                }
            })
        }
        OrgCommand::List => {
            let (orgs, raw) = ctx.client.list::<Org>("/v1/orgs").await?;
            let default = config::load(&ctx.client.config_path)?.org.map(|o| o.id);
            let rows = orgs
                .into_iter()
                .map(|o| {
                    let mark = if Some(o.id) == default { "*" } else { "" };
                    crate::row![
                        mark,
                        o.name,
                        wire_name(&o.role),
                        o.id.to_string(),
                        output::age(o.created_at),
                    ]
                })
                .collect();
            output::list(
                ctx.out,
                raw,
                &["CURRENT", "NAME", "ROLE", "ID", "AGE"],
                rows,
            );
            Ok(())
        }
        OrgCommand::Use { org } => {
            let (id, name) = ctx.resolve_org(&org).await?;
            let path = &ctx.client.config_path;
            let _lock = config::lock(path)?;
            let mut c = config::load(path)?;
            c.org = Some(DefaultOrg {
                id,
                name: name.clone(),
            });
            config::save(path, &c)?;
            ctx.say(format!(
                "Default organization: {} ({id}).",
                output::bold(&name)
            ));
            Ok(())
        }
        OrgCommand::Get { org } => {
            let id = match org {
                Some(o) => ctx.resolve_org(&o).await?.0,
                None => ctx.org_id().await?,
            };
            ctx.show(&format!("/v1/orgs/{id}"), |o: Org| {
                output::fields(&[
                    ("Name", o.name),
                    ("Id", o.id.to_string()),
                    ("Your role", wire_name(&o.role)),
                    ("Created", output::time(Some(o.created_at))),
                ])
            })
            .await
        }
        OrgCommand::Leave { org } => {
            let (id, name) = match org {
                Some(o) => ctx.resolve_org(&o).await?,
                None => ctx.resolve_org(&ctx.org_id().await?.to_string()).await?,
            };
            let me: Me = ctx.client.get("/v1/me").await?.parse()?;
            ctx.client
                .delete(&format!("/v1/orgs/{id}/members/{}", me.user.id))
                .await?;
            let path = &ctx.client.config_path;
            let _lock = config::lock(path)?;
            let mut c = config::load(path)?;
            if c.org.as_ref().is_some_and(|o| o.id == id) {
                c.org = None;
                config::save(path, &c)?;
            }
            ctx.say(format!("You left {name}."));
            Ok(())
        }
    }
}

pub async fn members(ctx: &Ctx, c: Option<MembersCommand>) -> Result {
    let org = ctx.org_id().await?;
    match c.unwrap_or(MembersCommand::List) {
        MembersCommand::List => {
            let (members, raw) = ctx
                .client
                .list::<Member>(&format!("/v1/orgs/{org}/members"))
                .await?;
            let rows = members
                .into_iter()
                .map(|m| {
                    crate::row![
                        m.email,
                        m.name,
                        wire_name(&m.role),
                        output::age(m.joined_at),
                        m.user_id.to_string(),
                    ]
                })
                .collect();
            output::list(
                ctx.out,
                raw,
                &["EMAIL", "NAME", "ROLE", "JOINED", "+USER ID"],
                rows,
            );
            Ok(())
        }
        MembersCommand::SetRole { member, role } => {
            let m = member_of(ctx, org, &member).await?;
            let body = RoleRequest { role: wire(role) };
            let reply = ctx
                .client
                .patch(&format!("/v1/orgs/{org}/members/{}", m.user_id), &body)
                .await?;
            ctx.print(&reply, |m: Member| {
                anstream::println!("{} is now {}.", m.email, wire_name(&m.role))
            })
        }
        MembersCommand::Remove { member } => {
            let m = member_of(ctx, org, &member).await?;
            ctx.client
                .delete(&format!("/v1/orgs/{org}/members/{}", m.user_id))
                .await?;
            ctx.say(format!("Removed {}.", m.email));
            Ok(())
        }
    }
}

/// A member by user id or e-mail (case-insensitively, as the server compares them).
async fn member_of(ctx: &Ctx, org: Uuid, who: &str) -> Result<Member> {
    let (members, _) = ctx
        .client
        .list::<Member>(&format!("/v1/orgs/{org}/members"))
        .await?;
    let id = Uuid::parse_str(who).ok();
    members
        .into_iter()
        .find(|m| Some(m.user_id) == id || m.email.eq_ignore_ascii_case(who))
        .ok_or_else(|| CliError::Other(format!("no member '{who}' in the organization")))
}

pub async fn invite(ctx: &Ctx, c: InviteCommand) -> Result {
    let org = ctx.org_id().await?;
    match c {
        InviteCommand::Create {
            role,
            expires,
            max_uses,
        } => {
            let body = CreateInviteRequest {
                role: wire(role),
                expires_in_seconds: expires,
                max_uses,
            };
            let reply = ctx
                .client
                .post(&format!("/v1/orgs/{org}/invites"), &body)
                .await
                .map_err(|e| {
                    e.with_flags(&[
                        ("role", "--role"),
                        ("expires_in_seconds", "--expires"),
                        ("max_uses", "--max-uses"),
                    ])
                })?;
            ctx.print(&reply, |i: CreatedInvite| {
                anstream::println!(
                    "Invite {} for a {}, {} use{}, expires {}. Share this code (it is shown only once):",
                    i.id,
                    wire_name(&i.role),
                    i.max_uses,
                    if i.max_uses == 1 { "" } else { "s" },
                    output::time(Some(i.expires_at)),
                );
                anstream::println!("{}", i.code);
            })
        }
        InviteCommand::List => {
            let (invites, raw) = ctx
                .client
                .list::<Invite>(&format!("/v1/orgs/{org}/invites"))
                .await?;
            let rows = invites
                .into_iter()
                .map(|i| {
                    crate::row![
                        i.id.to_string(),
                        wire_name(&i.role),
                        i.status,
                        format!("{}/{}", i.uses, i.max_uses),
                        output::time(Some(i.expires_at)),
                        output::age(i.created_at),
                    ]
                })
                .collect();
            output::list(
                ctx.out,
                raw,
                &["ID", "ROLE", "STATUS", "USES", "EXPIRES", "AGE"],
                rows,
            );
            Ok(())
        }
        InviteCommand::Revoke { id } => {
            ctx.client
                .delete(&format!("/v1/orgs/{org}/invites/{id}"))
                .await?;
            ctx.say(format!("Revoked invite {id}."));
            Ok(())
        }
    }
}

/// The organization's metrics: the server's text as it is (with `-o json` too: it is the
/// API's own answer).
pub async fn metrics(ctx: &Ctx) -> Result {
    let org = ctx.org_id().await?;
    let reply = ctx.client.get(&format!("/v1/orgs/{org}/metrics")).await?;
    let text = reply.body.as_str().ok_or_else(|| {
        CliError::Other("the server's metrics are not text: is it a Berth server?".into())
    })?;
    anstream::print!("{text}");
    Ok(())
}

pub async fn join(ctx: &Ctx, code: String) -> Result {
    let reply = ctx
        .client
        .post("/v1/invites/accept", &AcceptRequest { code })
        .await?;
    let accepted: Accepted = reply.parse()?;
    let org: Org = ctx
        .client
        .get(&format!("/v1/orgs/{}", accepted.org_id))
        .await?
        .parse()?;
    let made_default = set_default_if_none(ctx, &org)?;
    ctx.print(&reply, |a: Accepted| {
        anstream::println!(
            "Joined {} as {}.",
            output::bold(&org.name),
            wire_name(&a.role)
        );
        if made_default {
            anstream::println!("It is now your default organization.");
        }
    })
}

pub async fn api_key(ctx: &Ctx, c: ApiKeyCommand) -> Result {
    let org = ctx.org_id().await?;
    match c {
        ApiKeyCommand::Create { name, role } => {
            let body = CreateApiKeyRequest {
                name,
                role: wire(role),
            };
            let reply = ctx
                .client
                .post(&format!("/v1/orgs/{org}/api-keys"), &body)
                .await
                .map_err(|e| e.with_flags(&[("name", "NAME"), ("role", "--role")]))?;
            ctx.print(&reply, |k: CreatedApiKey| {
                anstream::println!(
                    "API key {} ({}, {}). Use it as BERTH_TOKEN; it is shown only once:",
                    k.key.name,
                    wire_name(&k.key.role),
                    k.key.id
                );
                anstream::println!("{}", k.secret);
            })
        }
        ApiKeyCommand::List => {
            let (keys, raw) = ctx
                .client
                .list::<ApiKey>(&format!("/v1/orgs/{org}/api-keys"))
                .await?;
            let rows = keys
                .into_iter()
                .map(|k| {
                    crate::row![
                        k.id.to_string(),
                        k.name,
                        wire_name(&k.role),
                        k.prefix,
                        if k.revoked_at.is_some() {
                            "revoked"
                        } else {
                            "active"
                        },
                        k.last_used_at
                            .map(output::age)
                            .unwrap_or_else(|| "never".into()),
                        output::age(k.created_at),
                    ]
                })
                .collect();
            output::list(
                ctx.out,
                raw,
                &["ID", "NAME", "ROLE", "PREFIX", "STATUS", "LAST USED", "AGE"],
                rows,
            );
            Ok(())
        }
        ApiKeyCommand::Revoke { id } => {
            ctx.client
                .delete(&format!("/v1/orgs/{org}/api-keys/{id}"))
                .await?;
            ctx.say(format!("Revoked API key {id}."));
            Ok(())
        }
    }
}

/// Makes `org` the default when there is none; true when it did.
fn set_default_if_none(ctx: &Ctx, org: &Org) -> Result<bool> {
    if ctx.client.uses_env_token() {
        return Ok(false);
    }
    let path = &ctx.client.config_path;
    let _lock = config::lock(path)?;
    let mut c = config::load(path)?;
    if c.org.is_some() || c.session.is_none() {
        return Ok(false);
    }
    c.org = Some(DefaultOrg {
        id: org.id,
        name: org.name.clone(),
    });
    config::save(path, &c)?;
    Ok(true)
}
