//! The Swarm service of one agent: the hub's container spec and the files a create writes, turned
//! into a replicated service of one task, with the files as Swarm secrets.

use std::collections::HashMap;

use bollard::models::{
    EndpointSpec, EndpointSpecModeEnum, Limit, Mount, MountTmpfsOptions, MountType,
    MountVolumeOptions, MountVolumeOptionsDriverConfig, ServiceSpec, ServiceSpecMode,
    ServiceSpecModeReplicated, TaskSpec, TaskSpecContainerSpec, TaskSpecContainerSpecFile,
    TaskSpecContainerSpecSecrets, TaskSpecLogDriver, TaskSpecPlacement, TaskSpecResources,
    TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum,
};
use sha2::{Digest, Sha256};

use crate::driver::{ContainerSpec, FileSpec, VolumeDriver};

/// What a volume's mount carries: its labels, and the driver (with options) to make it with.
pub type VolumeOptions = (HashMap<String, String>, Option<VolumeDriver>);

/// The label that ties a secret to its agent's service, so destroying the agent removes it.
pub const SERVICE_LABEL: &str = "dev.docker-agent.service";

/// A create in progress: what `create_container`, `create_volume` and `upload_files` collected,
/// made into a service at the first `start_container`.
#[derive(Debug, Clone, Default)]
pub struct Pending {
    pub spec: ContainerSpec,
    pub files: Vec<FileSpec>,
}

/// One file as a Swarm secret: its name (content-addressed, so a retried create reuses it) and spec data.
pub struct SecretFile<'a> {
    pub name: String,
    pub file: &'a FileSpec,
}

/// The secrets a service needs: every regular file of the create (directories come from the mounts).
pub fn secret_files<'a>(service: &str, files: &'a [FileSpec]) -> Vec<SecretFile<'a>> {
    files
        .iter()
        .filter(|f| !f.dir)
        .map(|file| {
            let mut hash = Sha256::new();
            hash.update(file.path.as_bytes());
            hash.update([0]);
            hash.update(&file.contents);
            hash.update(file.mode.to_le_bytes());
            hash.update(file.uid.to_le_bytes());
            hash.update(file.gid.to_le_bytes());
            let digest = hex::encode(hash.finalize());
            SecretFile {
                name: format!("{service}.{}", &digest[..16]),
                file,
            }
        })
        .collect()
}

/// The service: one replica placed by Swarm, no virtual IP (the agent dials out; this kernel may
/// have no IPVS), the container's limits as limits, restarted whatever way it ends.
pub fn service_spec(
    pending: &Pending,
    image: &str,
    secrets: &[(String, String, &FileSpec)],
    volume_labels: &HashMap<String, VolumeOptions>,
) -> ServiceSpec {
    let spec = &pending.spec;
    let volume = |source: &str, target: &str, read_only: bool| Mount {
        target: Some(target.to_string()),
        source: Some(source.to_string()),
        typ: Some(MountType::VOLUME),
        read_only: Some(read_only),
        volume_options: Some(MountVolumeOptions {
            labels: volume_labels.get(source).map(|(labels, _)| labels.clone()),
            driver_config: volume_labels
                .get(source)
                .and_then(|(_, driver)| driver.as_ref())
                .map(|d| MountVolumeOptionsDriverConfig {
                    name: Some(d.name.clone()),
                    options: Some(d.options.clone()),
                }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mounts = (!spec.volume.is_empty())
        .then(|| volume(&spec.volume, &spec.volume_target, false))
        .into_iter()
        .chain(spec.mounts.iter().map(|m| {
            if m.bind {
                Mount {
                    target: Some(m.target.clone()),
                    source: Some(m.source.clone()),
                    typ: Some(MountType::BIND),
                    read_only: Some(m.read_only),
                    ..Default::default()
                }
            } else {
                volume(&m.source, &m.target, m.read_only)
            }
        }))
        .chain(spec.tmpfs.iter().map(|path| Mount {
            target: Some(path.clone()),
            typ: Some(MountType::TMPFS),
            tmpfs_options: Some(MountTmpfsOptions {
                mode: Some(0o1777),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .collect();
    let secrets = secrets
        .iter()
        .map(|(id, name, file)| TaskSpecContainerSpecSecrets {
            file: Some(TaskSpecContainerSpecFile {
                name: Some(file.path.clone()),
                uid: Some(file.uid.to_string()),
                gid: Some(file.gid.to_string()),
                mode: Some(file.mode),
            }),
            secret_id: Some(id.clone()),
            secret_name: Some(name.clone()),
        })
        .collect();
    let container = TaskSpecContainerSpec {
        image: Some(image.to_string()),
        labels: Some(spec.labels.clone()),
        args: (!spec.cmd.is_empty()).then(|| spec.cmd.clone()),
        hostname: (!spec.hostname.is_empty()).then(|| spec.hostname.clone()),
        env: Some(spec.env.clone()),
        groups: (!spec.group_add.is_empty()).then(|| spec.group_add.clone()),
        read_only: Some(spec.read_only_root),
        mounts: Some(mounts),
        secrets: Some(secrets),
        init: Some(false),
        // A 1.41 service spec has no no-new-privileges: the agent sets it on itself, so every task
        // inherits it.
        capability_drop: Some(vec!["ALL".into()]),
        capability_add: Some(spec.cap_add.clone()),
        ..Default::default()
    };
    ServiceSpec {
        name: Some(spec.name.clone()),
        labels: Some(spec.labels.clone()),
        task_template: Some(TaskSpec {
            container_spec: Some(container),
            resources: Some(TaskSpecResources {
                limits: Some(Limit {
                    nano_cpus: (spec.nano_cpus > 0).then_some(spec.nano_cpus),
                    memory_bytes: (spec.memory_bytes > 0).then_some(spec.memory_bytes),
                    pids: (spec.pids_limit > 0).then_some(spec.pids_limit),
                }),
                ..Default::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
                delay: Some(1_000_000_000),
                ..Default::default()
            }),
            placement: (!spec.placement.is_empty()).then(|| TaskSpecPlacement {
                constraints: Some(spec.placement.clone()),
                ..Default::default()
            }),
            log_driver: Some(TaskSpecLogDriver {
                name: Some("json-file".into()),
                options: Some(HashMap::from([
                    ("max-size".to_string(), "20m".to_string()),
                    ("max-file".to_string(), "5".to_string()),
                ])),
            }),
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
            ..Default::default()
        }),
        endpoint_spec: Some(EndpointSpec {
            mode: Some(EndpointSpecModeEnum::DNSRR),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::MountSpec;

    #[test]
    fn a_service_of_one_replica_with_the_files_as_secrets_and_the_hardening_kept() {
        let pending = Pending {
            spec: ContainerSpec {
                name: "docker-agent-a1".into(),
                image: "docker-agent/minimal:abc".into(),
                cmd: vec!["--hub-url".into(), "https://h:1".into()],
                volume: "docker-agent-a1-workspace".into(),
                volume_target: "/workspace".into(),
                mounts: vec![MountSpec {
                    bind: false,
                    source: "docker-agent-a1-secrets".into(),
                    target: "/etc/docker-agent".into(),
                    read_only: false,
                }],
                tmpfs: vec!["/tmp".into()],
                read_only_root: true,
                placement: vec!["node.labels.gpu==1".into()],
                pids_limit: 256,
                memory_bytes: 1 << 30,
                cap_add: vec!["SETUID".into()],
                ..Default::default()
            },
            files: vec![
                FileSpec {
                    path: "/etc/docker-agent".into(),
                    dir: true,
                    ..Default::default()
                },
                FileSpec {
                    path: "/etc/docker-agent/token".into(),
                    mode: 0o400,
                    contents: b"t".to_vec(),
                    ..Default::default()
                },
            ],
        };
        let files = secret_files("docker-agent-a1", &pending.files);
        assert_eq!(files.len(), 1, "directories are not secrets");
        assert!(files[0].name.starts_with("docker-agent-a1."));
        let again = secret_files("docker-agent-a1", &pending.files);
        assert_eq!(files[0].name, again[0].name, "content-addressed");

        let secrets = vec![("id1".to_string(), files[0].name.clone(), files[0].file)];
        let nfs = VolumeDriver {
            name: "local".into(),
            options: HashMap::from([("type".to_string(), "nfs".to_string())]),
        };
        let volumes = HashMap::from([(
            "docker-agent-a1-workspace".to_string(),
            (HashMap::new(), Some(nfs)),
        )]);
        let spec = service_spec(
            &pending,
            "r:5000/docker-agent/minimal:abc@sha256:00",
            &secrets,
            &volumes,
        );
        assert_eq!(
            spec.mode.unwrap().replicated.unwrap().replicas,
            Some(1),
            "one task per agent"
        );
        assert_eq!(
            spec.endpoint_spec.unwrap().mode,
            Some(EndpointSpecModeEnum::DNSRR)
        );
        let task = spec.task_template.unwrap();
        let container = task.container_spec.unwrap();
        assert_eq!(container.capability_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(container.read_only, Some(true));
        assert_eq!(container.args.unwrap()[0], "--hub-url");
        let secret = &container.secrets.unwrap()[0];
        let file = secret.file.as_ref().unwrap();
        assert_eq!(file.name.as_deref(), Some("/etc/docker-agent/token"));
        assert_eq!(file.mode, Some(0o400));
        let mounts = container.mounts.unwrap();
        assert_eq!(mounts.len(), 3, "workspace, credentials volume, /tmp");
        let driver = mounts[0]
            .volume_options
            .as_ref()
            .and_then(|o| o.driver_config.as_ref())
            .expect("the workspace's volume driver");
        assert_eq!(driver.name.as_deref(), Some("local"));
        assert!(
            mounts[1]
                .volume_options
                .as_ref()
                .is_some_and(|o| o.driver_config.is_none()),
            "the credentials volume stays on the node"
        );
        assert_eq!(mounts[2].typ, Some(MountType::TMPFS));
        assert_eq!(task.resources.unwrap().limits.unwrap().pids, Some(256));
        assert_eq!(
            task.placement.unwrap().constraints.unwrap(),
            vec!["node.labels.gpu==1".to_string()]
        );
    }
}
