//! The choice: one (certificate, user) pair out of the candidates, asked of
//! the person when there are several.

use tessera_ipc::Conversation;
use zeroize::Zeroizing;

use super::candidate::Candidate;
use super::failure::AuthFailure;
use tessera_ipc::FailureKind;

/// Picks one (certificate, user) pair; asks the user when there are several.
pub(crate) fn choose<'a>(
    candidates: Vec<Candidate<'a>>,
    conversation: &mut dyn Conversation,
) -> Result<(Candidate<'a>, String), AuthFailure> {
    let mut options: Vec<(usize, String)> = candidates
        .iter()
        .enumerate()
        .flat_map(|(index, candidate)| {
            candidate
                .users
                .iter()
                .map(move |user| (index, user.clone()))
        })
        .collect();
    let chosen = if options.len() == 1 {
        0
    } else {
        let mut listing = String::from("Several certificates can log you in:");
        for (number, (index, user)) in options.iter().enumerate() {
            let candidate = &candidates[*index];
            listing.push_str(&format!(
                "\n  {}. {user}: {} on {}",
                number + 1,
                candidate.subject,
                candidate.token.describe()
            ));
        }
        conversation.info(&listing)?;
        // People type their PIN here by mistake: the answer is wiped, and
        // neither logged nor shown back.
        let answer = Zeroizing::new(
            conversation.prompt_visible(&format!("Choose [1-{}]: ", options.len()))?,
        );
        match answer.trim().parse::<usize>() {
            Ok(number) if (1..=options.len()).contains(&number) => number - 1,
            _ => {
                conversation.error("Invalid choice")?;
                return Err(AuthFailure::new(
                    FailureKind::InvalidChoice,
                    format!(
                        "the answer to the certificate choice was not a number from 1 to {}",
                        options.len()
                    ),
                ));
            }
        }
    };
    let (index, user) = options.swap_remove(chosen);
    let candidate = candidates
        .into_iter()
        .nth(index)
        .ok_or_else(|| AuthFailure::new(FailureKind::Internal, "candidate index out of range"))?;
    Ok((candidate, user))
}
