//! Who may do what in etcd. etcd's own authorization, with the user taken
//! from the client certificate's common name: the workstation (`kctl`) is
//! root; each minion's helper (CN = the minion's id) gets a role of its own
//! with what its converge and the cluster leader's work need, and no more.
//!
//! A minion's key may:
//! - read the cluster's state (its converge plans from all of it);
//! - write its own heartbeat, version, rule digest, last-seen time and
//!   converge lock (not its minion record: others trust its pod range);
//! - write pods, their statuses and owner marks, service endpoints, the
//!   generation and the leader key: the leader (any helper may become it)
//!   reschedules pods off NotReady minions and keeps controllers' replica
//!   counts, and each helper reports its pods and their endpoints;
//! - record events;
//! - ask for its certificate to be renewed (its own request key) and read
//!   the answer to it.
//!
//! It may not write services, replication controllers, load balancers,
//! rollouts, cordons, other owner marks, another minion's keys, or
//! anything of etcd's own (members, users, roles). Compare Kubernetes'
//! Node authorizer, which also confines a kubelet to its own node and its
//! pods' statuses but lets it read only the pods bound to it; etcd grants
//! by key prefix, and kctl keeps pods under one prefix, so a minion's key
//! reads every pod (and its env).
//!
//! The renewal signer (`kctl-signer`, beside each etcd member) reads the
//! minions' records and their requests and writes the answers, nothing
//! else. A minion that leaves loses its user and role, so etcd refuses its
//! certificate from then on.

use super::{Store, StoreError};
use etcd_client::{Permission, UserAddOptions};

/// etcd's administrator; it must exist for authorization to be on. No
/// password and no certificate of the cluster names it.
const ROOT: &str = "root";

/// A minion's role: `minion:<id>`.
fn role_of(minion: &str) -> String {
    format!("minion:{minion}")
}

/// Read and write `key`, or every key under it when it ends in `/`.
fn read_write(key: String) -> Permission {
    if key.ends_with('/') {
        Permission::read_write(key).with_prefix()
    } else {
        Permission::read_write(key)
    }
}

/// What minion `minion` of cluster `cluster` may touch (see the module's
/// text for why each).
pub fn minion_permissions(cluster: &str, minion: &str) -> Vec<Permission> {
    let state = format!("/kctl/{cluster}/");
    let own = ["heartbeats", "versions", "rules"]
        .into_iter()
        .map(|kind| read_write(format!("{state}{kind}/{minion}")));
    let shared = [
        "pods/",
        "status/pods/",
        "owners/pod/",
        "endpoints/",
        "generation",
        "leader",
    ]
    .into_iter()
    .map(|key| read_write(format!("{state}{key}")));
    let seen = format!("/kctl-seen/{cluster}/");
    std::iter::once(Permission::read(state.clone()).with_prefix())
        .chain(own)
        .chain(shared)
        .chain([
            Permission::read(seen.clone()).with_prefix(),
            read_write(format!("{seen}{minion}")),
            read_write(format!("/kctl-events/{cluster}/")),
            // A lock's queue: its waiters' keys under the name plus `/`.
            read_write(format!("/kctl-locks/{cluster}/minions/{minion}/")),
            read_write(super::renewal_request_key(cluster, minion)),
            Permission::read(super::renewal_answer_key(cluster, minion)),
        ])
        .collect()
}

/// The renewal signer's role.
const SIGNER_ROLE: &str = "signer";

/// What the renewal signer may touch: it signs for minions that exist.
pub fn signer_permissions(cluster: &str) -> Vec<Permission> {
    vec![
        Permission::read(format!("/kctl/{cluster}/minions/")).with_prefix(),
        Permission::read(super::renewal_request_key(cluster, "")).with_prefix(),
        read_write(super::renewal_answer_key(cluster, "")),
    ]
}

/// The users etcd should know besides the minions: root and the
/// workstation, both with the root role.
fn administrators() -> [&'static str; 2] {
    [ROOT, crate::pki::WORKSTATION_NAME]
}

impl Store {
    /// Makes etcd's users and roles say what the module's text says, for
    /// exactly `minions`, and turns authorization on. Idempotent; returns
    /// whether anything changed. Needs the workstation's identity (root),
    /// or an etcd whose authorization is still off.
    pub async fn ensure_access(
        &self,
        cluster: &str,
        minions: &[String],
    ) -> Result<bool, StoreError> {
        let (_, client) = self.members.client();
        let mut auth = client.auth_client();
        let mut changed = false;
        let users = auth.user_list().await?.users().to_vec();
        let roles = auth.role_list().await?.roles().to_vec();
        for admin in administrators() {
            if !users.iter().any(|u| u == admin) {
                auth.user_add(admin, "", Some(UserAddOptions::new().with_no_pwd()))
                    .await?;
                changed = true;
            }
            let has = auth.user_get(admin).await?.roles().to_vec();
            if !has.iter().any(|r| r == ROOT) {
                auth.user_grant_role(admin, ROOT).await?;
                changed = true;
            }
        }
        changed |=
            ensure_role(&mut auth, &roles, SIGNER_ROLE, &signer_permissions(cluster)).await?;
        changed |= ensure_user(&mut auth, &users, crate::pki::SIGNER_NAME, SIGNER_ROLE).await?;
        for minion in minions {
            let role = role_of(minion);
            changed |= ensure_role(
                &mut auth,
                &roles,
                &role,
                &minion_permissions(cluster, minion),
            )
            .await?;
            changed |= ensure_user(&mut auth, &users, minion, &role).await?;
        }
        // Minions that left: their certificates stop working here.
        for user in &users {
            if administrators().contains(&user.as_str())
                || user == crate::pki::SIGNER_NAME
                || minions.contains(user)
            {
                continue;
            }
            auth.user_delete(user.as_str()).await?;
            changed = true;
        }
        for role in &roles {
            let Some(minion) = role.strip_prefix("minion:") else {
                continue;
            };
            if !minions.iter().any(|m| m == minion) {
                auth.role_delete(role.as_str()).await?;
                changed = true;
            }
        }
        // Already on: etcd says so and changes nothing.
        auth.auth_enable().await?;
        Ok(changed)
    }
}

/// Makes `role` exist with exactly the permissions `wanted`; `roles` are
/// those etcd has. True if anything changed.
async fn ensure_role(
    auth: &mut etcd_client::AuthClient,
    roles: &[String],
    role: &str,
    wanted: &[Permission],
) -> Result<bool, StoreError> {
    let mut changed = false;
    let granted = if roles.iter().any(|r| r == role) {
        auth.role_get(role).await?.permissions()
    } else {
        auth.role_add(role).await?;
        changed = true;
        vec![]
    };
    // What is missing first, then what is no longer wanted: a running
    // helper is never left without a right it keeps. (A grant on a key the
    // role has replaces its type.)
    for p in wanted.iter().filter(|w| !granted.contains(w)) {
        auth.role_grant_permission(role, p.clone()).await?;
        changed = true;
    }
    let range = |p: &Permission| (p.key().to_vec(), p.is_prefix());
    for p in granted
        .iter()
        .filter(|g| !wanted.iter().any(|w| range(w) == range(g)))
    {
        let end = p.range_end().to_vec();
        let options = (!end.is_empty())
            .then(|| etcd_client::RoleRevokePermissionOptions::new().with_range_end(end));
        auth.role_revoke_permission(role, p.key().to_vec(), options)
            .await?;
        changed = true;
    }
    Ok(changed)
}

/// Makes `user` (a certificate name, no password) exist with `role` as its
/// only role; `users` are those etcd has. True if anything changed.
async fn ensure_user(
    auth: &mut etcd_client::AuthClient,
    users: &[String],
    user: &str,
    role: &str,
) -> Result<bool, StoreError> {
    let mut changed = false;
    if !users.iter().any(|u| u == user) {
        auth.user_add(user, "", Some(UserAddOptions::new().with_no_pwd()))
            .await?;
        changed = true;
    }
    let has = auth.user_get(user).await?.roles().to_vec();
    if has != [role.to_string()] {
        for other in has.iter().filter(|r| *r != role) {
            auth.user_revoke_role(user, other.as_str()).await?;
        }
        if !has.iter().any(|r| r == role) {
            auth.user_grant_role(user, role).await?;
        }
        changed = true;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn described(perms: &[Permission]) -> Vec<String> {
        perms
            .iter()
            .map(|p| {
                use etcd_client::PermissionType as T;
                let kind = match p.get_type() {
                    t if t == T::Read as i32 => "read",
                    t if t == T::Write as i32 => "write",
                    _ => "readwrite",
                };
                let prefix = if p.is_prefix() { " prefix" } else { "" };
                format!("{kind}{prefix} {}", p.key_str().unwrap())
            })
            .collect()
    }

    #[test]
    fn a_minion_writes_its_own_keys_and_the_leaders_not_the_desired_state() {
        let perms = described(&minion_permissions("c1", "minion-1"));
        for want in [
            "read prefix /kctl/c1/",
            "readwrite /kctl/c1/heartbeats/minion-1",
            "readwrite prefix /kctl/c1/status/pods/",
            "readwrite prefix /kctl/c1/pods/",
            "readwrite /kctl/c1/generation",
            "readwrite prefix /kctl-locks/c1/minions/minion-1/",
            "readwrite /kctl-seen/c1/minion-1",
        ] {
            assert!(perms.contains(&want.to_string()), "{want} in {perms:?}");
        }
        // Nothing that changes what runs besides pods, and nothing of
        // another minion's: no write under services/, controllers/, … and
        // no prefix that takes in `minion-10` with `minion-1`.
        for p in perms.iter().filter(|p| p.starts_with("readwrite")) {
            for forbidden in [
                "services",
                "controllers",
                "loadbalancers",
                "rollouts",
                "cordoned",
            ] {
                assert!(!p.contains(forbidden), "{p}");
            }
            assert!(
                !p.ends_with("minion-1") || !p.contains("prefix"),
                "{p} would take in minion-10"
            );
        }
    }
}
