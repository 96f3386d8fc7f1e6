//! The `pam_sm_*` symbols libpam looks up: pamsm's macro over
//! [`PamTessera`], whose methods run under a panic guard.

use pamsm::PamServiceModule;

use crate::PamTessera;

pamsm::pam_module!(PamTessera);
