//! Installs the six preset MonitoringProfiles when they are missing.

use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use podtrace_api::MonitoringProfile;
use podtrace_api::presets::Preset;

use crate::{Error, FIELD_MANAGER, Result};

/// Creates every preset that does not exist. A create never overwrites: a user's edit of a preset
/// (or a deliberately deleted one recreated by the user) is kept, and the API server answers
/// 409 AlreadyExists, which is success here.
pub async fn install(client: Client) -> Result<usize> {
    let api: Api<MonitoringProfile> = Api::all(client);
    let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    let mut created = 0;
    for preset in Preset::ALL {
        let profile = MonitoringProfile {
            metadata: ObjectMeta {
                name: Some(preset.name().into()),
                labels: Some([("podtrace.dev/preset".into(), "true".into())].into()),
                annotations: Some(
                    [("podtrace.dev/description".into(), preset.description().into())].into(),
                ),
                ..Default::default()
            },
            spec: preset.spec(),
        };
        match api.create(&params, &profile).await {
            Ok(_) => {
                tracing::info!(profile = preset.name(), "installed preset MonitoringProfile");
                created += 1;
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => {
                return Err(Error::kube(format!(
                    "creating preset MonitoringProfile/{}",
                    preset.name()
                ))(e));
            }
        }
    }
    Ok(created)
}
