//! The classic group membership protocol: JoinGroup, SyncGroup, Heartbeat, LeaveGroup and the
//! timer-driven transitions (session expiry, join and sync phase deadlines). Each function
//! mirrors the like-named method of Kafka 4.x `GroupMetadataManager` (classic paths); comments
//! give the reason for each rule and note where Keel deliberately differs.

use bytes::Bytes;

use crate::api::{
    Effect, GroupState, Heartbeat, HeartbeatResponse, JoinGroup, JoinGroupResponse, LeaveGroup, LeaveGroupResponse,
    LeaveMemberResponse, RequestId, Response, SyncGroup, SyncGroupResponse,
};
use crate::coordinator::{empty_group_metadata_record, group_metadata_record, schedule_heartbeat, Coordinator, Out};
use crate::error::ErrorCode;
use crate::group::{ClassicGroup, Member};
use crate::timer::{TimerAction, TimerKey};

/// The longest string a Kafka record (or request) can carry.
pub(crate) const MAX_STRING_BYTES: usize = i16::MAX as usize;

/// How often a member id generator may collide with a live id before the join is refused.
const MEMBER_ID_ATTEMPTS: usize = 16;

fn join_error(id: RequestId, member_id: &str, error: ErrorCode, out: &mut Out) {
    out.respond(id, Response::JoinGroup(JoinGroupResponse::error(member_id.to_owned(), error)));
}

fn sync_error(id: RequestId, error: ErrorCode, out: &mut Out) {
    out.respond(id, Response::SyncGroup(SyncGroupResponse::error(error)));
}

impl Coordinator {
    /// JoinGroup (any version 0–9). The response may come now or later (when the join phase
    /// completes) in an [`Effect::Respond`] for `id`.
    pub fn join_group(&mut self, id: RequestId, request: JoinGroup, now_ms: i64) -> Vec<Effect> {
        self.ensure_cleanup_scheduled(now_ms);
        let mut out = Out::default();
        self.join(id, request, now_ms, &mut out);
        out.into_effects()
    }

    /// SyncGroup (any version 0–5). A follower's response waits for the leader's assignment.
    pub fn sync_group(&mut self, id: RequestId, request: SyncGroup, now_ms: i64) -> Vec<Effect> {
        self.ensure_cleanup_scheduled(now_ms);
        let mut out = Out::default();
        self.sync(id, request, now_ms, &mut out);
        out.into_effects()
    }

    /// Heartbeat (any version 0–4); always answered at once.
    pub fn heartbeat(&mut self, id: RequestId, request: Heartbeat, now_ms: i64) -> Vec<Effect> {
        self.ensure_cleanup_scheduled(now_ms);
        let mut out = Out::default();
        let error = self.heartbeat_error(&request, now_ms);
        out.respond(id, Response::Heartbeat(HeartbeatResponse { error_code: error }));
        out.into_effects()
    }

    /// LeaveGroup (any version 0–5); answered at once, after any records it writes.
    pub fn leave_group(&mut self, id: RequestId, request: LeaveGroup, now_ms: i64) -> Vec<Effect> {
        self.ensure_cleanup_scheduled(now_ms);
        let mut out = Out::default();
        let response = self.leave(request, now_ms, &mut out);
        out.respond(id, Response::LeaveGroup(response));
        out.into_effects()
    }

    /// Runs `f` on a group taken out of the map, so `f` can use the rest of `self` freely.
    pub(crate) fn with_group<R>(
        &mut self,
        group_id: &str,
        f: impl FnOnce(&mut Self, &mut ClassicGroup) -> R,
    ) -> Option<R> {
        let mut group = self.groups.remove(group_id)?;
        let result = f(self, &mut group);
        self.groups.insert(group.group_id.clone(), group);
        Some(result)
    }

    // ---------------------------------------------------------------- JoinGroup

    fn join(&mut self, id: RequestId, mut request: JoinGroup, now_ms: i64, out: &mut Out) {
        // Kafka's JoinGroupRequest: v0 has no rebalance timeout and uses the session timeout.
        if request.version == 0 {
            request.rebalance_timeout_ms = request.session_timeout_ms;
        }
        // GroupCoordinatorService.joinGroup checks these before touching any group.
        if request.group_id.is_empty() || request.group_id.len() > MAX_STRING_BYTES {
            return join_error(id, &request.member_id, ErrorCode::INVALID_GROUP_ID, out);
        }
        // A KIP-848 consumer group of this id: an empty one gives way, a live one refuses.
        if let Some(error) = self.classic_join_conflict(&request.group_id, out) {
            return join_error(id, &request.member_id, error, out);
        }
        if request.session_timeout_ms < self.config.group_min_session_timeout_ms
            || request.session_timeout_ms > self.config.group_max_session_timeout_ms
        {
            return join_error(id, &request.member_id, ErrorCode::INVALID_SESSION_TIMEOUT, out);
        }
        // Everything below may end up in a GroupMetadata record; Kafka strings hold 32767 bytes.
        // (Kafka would fail the record write instead; refusing up front keeps state and log equal.)
        let too_long = [&request.member_id, &request.client_id, &request.client_host, &request.protocol_type]
            .into_iter()
            .chain(request.group_instance_id.as_ref())
            .chain(request.protocols.iter().map(|p| &p.name))
            .any(|s| s.len() > MAX_STRING_BYTES);
        if too_long {
            return join_error(id, &request.member_id, ErrorCode::INVALID_REQUEST, out);
        }

        let is_unknown_member = request.member_id.is_empty();
        let is_new_group = !self.groups.contains_key(&request.group_id);
        if is_new_group && !is_unknown_member {
            // A member id for a group that does not exist: it must rejoin from scratch.
            return join_error(id, &request.member_id, ErrorCode::UNKNOWN_MEMBER_ID, out);
        }
        if is_new_group {
            let group = ClassicGroup::new(request.group_id.clone(), Some(now_ms));
            self.groups.insert(request.group_id.clone(), group);
        }
        let group_id = request.group_id.clone();
        self.with_group(&group_id, |this, group| {
            if !this.accept_joining_member(group, &request.member_id) {
                this.remove_member(group, &request.member_id, out);
                join_error(id, "", ErrorCode::GROUP_MAX_SIZE_REACHED, out);
            } else if is_unknown_member {
                this.join_new_member(group, id, &request, now_ms, out);
            } else {
                this.join_existing_member(group, id, &request, now_ms, out);
            }
            // A new group must reach the log even when the join wrote nothing (Kafka's
            // `newEmptyGroupMetadataRecord`), so a failover does not forget it.
            if is_new_group && !out.has_records() {
                out.persist(empty_group_metadata_record(group));
            }
        });
    }

    /// Kafka's `acceptJoiningMember` (KIP-389 `group.max.size`).
    fn accept_joining_member(&self, group: &ClassicGroup, member_id: &str) -> bool {
        let max = self.config.group_max_size;
        match group.state {
            GroupState::Empty | GroupState::Dead | GroupState::Assigning | GroupState::Reconciling => true,
            // The number of members already rejoined is used, not the group size: the group may
            // be over a lowered limit, and this way the last members to rejoin are the ones out.
            GroupState::PreparingRebalance => {
                group.members.get(member_id).is_some_and(|m| m.awaiting_join.is_some())
                    || group.num_awaiting_join() < max
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                group.members.contains_key(member_id) || group.members.len() < max
            }
        }
    }

    fn join_new_member(
        &mut self,
        group: &mut ClassicGroup,
        id: RequestId,
        request: &JoinGroup,
        now_ms: i64,
        out: &mut Out,
    ) {
        if !group.supports_protocols(&request.protocol_type, &request.protocols) {
            return join_error(id, "", ErrorCode::INCONSISTENT_GROUP_PROTOCOL, out);
        }
        let prefix = request.group_instance_id.as_deref().unwrap_or(&request.client_id);
        let new_member_id =
            (0..MEMBER_ID_ATTEMPTS).map(|_| format!("{prefix}-{}", self.member_ids.next_suffix())).find(|candidate| {
                !group.members.contains_key(candidate) && !group.pending_join_members.contains(candidate)
            });
        let Some(new_member_id) = new_member_id else {
            return join_error(id, "", ErrorCode::UNKNOWN_SERVER_ERROR, out);
        };
        if new_member_id.len() > MAX_STRING_BYTES {
            return join_error(id, "", ErrorCode::INVALID_REQUEST, out);
        }

        if let Some(instance_id) = &request.group_instance_id {
            match group.static_members.get(instance_id).cloned() {
                // KIP-345: a restarted static member takes over its old identity.
                Some(old_member_id) => self.update_static_member_then_rebalance_or_complete_join(
                    group,
                    id,
                    request,
                    &old_member_id,
                    &new_member_id,
                    now_ms,
                    out,
                ),
                None => self.add_member_then_rebalance_or_complete_join(group, id, request, new_member_id, now_ms, out),
            }
        } else if request.version >= 4 {
            // KIP-394: the member must come back with this id, so that a client whose JoinGroup
            // timed out does not leave a stream of unknown members behind. The pending id lives
            // for one session timeout.
            group.pending_join_members.insert(new_member_id.clone());
            schedule_heartbeat(&mut self.timers, &group.group_id, &new_member_id, request.session_timeout_ms, now_ms);
            join_error(id, &new_member_id, ErrorCode::MEMBER_ID_REQUIRED, out);
        } else {
            // JoinGroup v0–v3 clients cannot retry with an id: they are added directly.
            self.add_member_then_rebalance_or_complete_join(group, id, request, new_member_id, now_ms, out);
        }
    }

    fn join_existing_member(
        &mut self,
        group: &mut ClassicGroup,
        id: RequestId,
        request: &JoinGroup,
        now_ms: i64,
        out: &mut Out,
    ) {
        let member_id = request.member_id.as_str();
        if !group.supports_protocols(&request.protocol_type, &request.protocols) {
            return join_error(id, member_id, ErrorCode::INCONSISTENT_GROUP_PROTOCOL, out);
        }
        if group.pending_join_members.contains(member_id) {
            // Pending ids are only handed to dynamic members; Kafka throws
            // IllegalStateException (UNKNOWN_SERVER_ERROR) if a static one claims one.
            if request.group_instance_id.is_some() {
                return join_error(id, member_id, ErrorCode::UNKNOWN_SERVER_ERROR, out);
            }
            return self.add_member_then_rebalance_or_complete_join(
                group,
                id,
                request,
                member_id.to_owned(),
                now_ms,
                out,
            );
        }
        if let Err(error) = group.validate_member(member_id, request.group_instance_id.as_deref()) {
            return join_error(id, member_id, error, out);
        }
        let matches = group.members.get(member_id).is_some_and(|m| m.protocols == request.protocols);
        match group.state {
            GroupState::PreparingRebalance => {
                self.update_member_then_rebalance_or_complete_join(group, id, request, now_ms, out)
            }
            // Same metadata: the member probably missed its JoinGroup response; give it again.
            GroupState::CompletingRebalance if matches => {
                let members = if group.is_leader(member_id) { group.join_response_members() } else { Vec::new() };
                let response = current_generation_response(group, member_id, members);
                out.respond(id, Response::JoinGroup(response));
            }
            GroupState::CompletingRebalance => {
                self.update_member_then_rebalance_or_complete_join(group, id, request, now_ms, out)
            }
            // A leader rejoining forces a rebalance: that is how a consumer reacts to metadata
            // changes (new partitions) that do not change its own subscription.
            GroupState::Stable if group.is_leader(member_id) || !matches => {
                self.update_member_then_rebalance_or_complete_join(group, id, request, now_ms, out)
            }
            GroupState::Stable => {
                let response = current_generation_response(group, member_id, Vec::new());
                out.respond(id, Response::JoinGroup(response));
            }
            GroupState::Empty | GroupState::Dead | GroupState::Assigning | GroupState::Reconciling => {
                join_error(id, member_id, ErrorCode::UNKNOWN_MEMBER_ID, out)
            }
        }
    }

    /// Kafka's `updateMember`: new protocols and timeouts, and the JoinGroup is parked.
    fn update_member(group: &mut ClassicGroup, id: RequestId, member_id: &str, request: &JoinGroup, out: &mut Out) {
        let Some(member) = group.members.get_mut(member_id) else {
            return;
        };
        member.protocols = request.protocols.clone();
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        member.session_timeout_ms = request.session_timeout_ms;
        if let Some(superseded) = member.awaiting_join.replace(id) {
            // Kafka drops the earlier parked request without answering it; Keel answers it so
            // the server never holds a request forever (the client retries on this error).
            if superseded != id {
                join_error(superseded, member_id, ErrorCode::REBALANCE_IN_PROGRESS, out);
            }
        }
    }

    fn update_member_then_rebalance_or_complete_join(
        &mut self,
        group: &mut ClassicGroup,
        id: RequestId,
        request: &JoinGroup,
        now_ms: i64,
        out: &mut Out,
    ) {
        Self::update_member(group, id, &request.member_id, request, out);
        self.maybe_prepare_rebalance_or_complete_join(group, now_ms, out);
    }

    fn add_member_then_rebalance_or_complete_join(
        &mut self,
        group: &mut ClassicGroup,
        id: RequestId,
        request: &JoinGroup,
        member_id: String,
        now_ms: i64,
        out: &mut Out,
    ) {
        // A member joining during the initial delayed rebalance extends the delay (KIP-134).
        if group.state == GroupState::PreparingRebalance && group.previous_state == GroupState::Empty {
            group.new_member_added = true;
        }
        group.add(Member {
            member_id: member_id.clone(),
            group_instance_id: request.group_instance_id.clone(),
            client_id: request.client_id.clone(),
            client_host: request.client_host.clone(),
            rebalance_timeout_ms: request.rebalance_timeout_ms,
            session_timeout_ms: request.session_timeout_ms,
            protocol_type: request.protocol_type.clone(),
            protocols: request.protocols.clone(),
            assignment: Bytes::new(),
            awaiting_join: Some(id),
            awaiting_sync: None,
            is_new: true,
        });
        // A new member cannot heartbeat while its JoinGroup is parked, and a client that gave up
        // would otherwise linger as a defunct member: time the join out instead.
        schedule_heartbeat(
            &mut self.timers,
            &group.group_id,
            &member_id,
            self.config.group_new_member_join_timeout_ms,
            now_ms,
        );
        self.maybe_prepare_rebalance_or_complete_join(group, now_ms, out);
    }

    /// KIP-345: a static member restarted with a new member id. The old id is fenced; in a Stable
    /// group whose protocol does not change, the member just gets its old assignment back.
    #[allow(clippy::too_many_arguments)]
    fn update_static_member_then_rebalance_or_complete_join(
        &mut self,
        group: &mut ClassicGroup,
        id: RequestId,
        request: &JoinGroup,
        old_member_id: &str,
        new_member_id: &str,
        now_ms: i64,
        out: &mut Out,
    ) {
        let leader_before = group.leader_or_empty();
        let Some(session_timeout_ms) = self.replace_static_member(group, old_member_id, new_member_id, out) else {
            return join_error(id, "", ErrorCode::UNKNOWN_SERVER_ERROR, out);
        };
        self.schedule_heartbeat(&group.group_id, new_member_id, session_timeout_ms, now_ms);
        Self::update_member(group, id, new_member_id, request, out);

        match group.state {
            GroupState::Stable => {
                if group.select_protocol() == group.protocol_name {
                    // Persist the new member id; the response follows the record.
                    out.persist(group_metadata_record(group));
                    if let Some(member) = group.members.get_mut(new_member_id) {
                        member.awaiting_join = None;
                    }
                    let response = if request.version >= 9 {
                        // KIP-814: the leader learns it is leader but must not reassign.
                        let is_leader = group.is_leader(new_member_id);
                        let members = if is_leader { group.join_response_members() } else { Vec::new() };
                        JoinGroupResponse {
                            skip_assignment: is_leader,
                            ..current_generation_response(group, new_member_id, members)
                        }
                    } else {
                        // Older clients are told the old leader id, so a restarted static leader
                        // does not run an assignment that nobody would wait for.
                        JoinGroupResponse {
                            leader: leader_before,
                            ..current_generation_response(group, new_member_id, Vec::new())
                        }
                    };
                    out.respond(id, Response::JoinGroup(response));
                } else {
                    self.maybe_prepare_rebalance_or_complete_join(group, now_ms, out);
                }
            }
            // The leader may already have computed an assignment for the old id: start over.
            GroupState::CompletingRebalance => self.prepare_rebalance(group, now_ms, out),
            GroupState::PreparingRebalance => self.maybe_complete_join_phase(group, now_ms, out),
            GroupState::Empty | GroupState::Dead | GroupState::Assigning | GroupState::Reconciling => {
                // Unreachable: a group with a static member is not Empty (Kafka throws here).
                if let Some(member) = group.members.get_mut(new_member_id) {
                    member.awaiting_join = None;
                }
                join_error(id, new_member_id, ErrorCode::UNKNOWN_SERVER_ERROR, out);
            }
        }
    }

    /// Kafka's `replaceStaticMember`: the member keeps everything but its id; requests parked
    /// under the old id get FENCED_INSTANCE_ID. Returns the member's session timeout.
    fn replace_static_member(
        &mut self,
        group: &mut ClassicGroup,
        old_member_id: &str,
        new_member_id: &str,
        out: &mut Out,
    ) -> Option<i32> {
        let mut member = group.members.remove(old_member_id)?;
        self.timers
            .cancel(&TimerKey::Heartbeat { group_id: group.group_id.clone(), member_id: old_member_id.to_owned() });
        if let Some(parked) = member.awaiting_join.take() {
            join_error(parked, old_member_id, ErrorCode::FENCED_INSTANCE_ID, out);
        }
        if let Some(parked) = member.awaiting_sync.take() {
            sync_error(parked, ErrorCode::FENCED_INSTANCE_ID, out);
        }
        member.member_id = new_member_id.to_owned();
        member.is_new = false;
        if let Some(instance_id) = &member.group_instance_id {
            group.static_members.insert(instance_id.clone(), new_member_id.to_owned());
        }
        if group.is_leader(old_member_id) {
            group.leader_id = Some(new_member_id.to_owned());
        }
        let session_timeout_ms = member.session_timeout_ms;
        group.members.insert(new_member_id.to_owned(), member);
        Some(session_timeout_ms)
    }

    // ------------------------------------------------------ rebalance transitions

    fn maybe_prepare_rebalance_or_complete_join(&mut self, group: &mut ClassicGroup, now_ms: i64, out: &mut Out) {
        if group.can_rebalance() {
            self.prepare_rebalance(group, now_ms, out);
        } else {
            self.maybe_complete_join_phase(group, now_ms, out);
        }
    }

    /// Kafka's `prepareRebalance`: parked SyncGroups are told to rejoin; a group leaving Empty
    /// waits `group.initial.rebalance.delay.ms` so that a fleet of consumers starting together
    /// joins in one rebalance rather than one per member.
    pub(crate) fn prepare_rebalance(&mut self, group: &mut ClassicGroup, now_ms: i64, out: &mut Out) {
        if group.state == GroupState::CompletingRebalance {
            Self::reset_and_propagate_assignment_with_error(
                &mut self.timers,
                group,
                ErrorCode::REBALANCE_IN_PROGRESS,
                now_ms,
                out,
            );
        }
        self.remove_sync_expiration(group);
        let is_initial_rebalance = group.state == GroupState::Empty;
        if is_initial_rebalance {
            let delay_ms = self.config.group_initial_rebalance_delay_ms.max(0);
            let remaining_ms = group.rebalance_timeout_ms().saturating_sub(delay_ms).max(0);
            self.timers.schedule(
                TimerKey::Join { group_id: group.group_id.clone() },
                now_ms.saturating_add(i64::from(delay_ms)),
                TimerAction::InitialJoin { delay_ms, remaining_ms },
            );
        }
        group.transition_to(GroupState::PreparingRebalance, now_ms);
        if !is_initial_rebalance {
            self.maybe_complete_join_else_schedule(group, now_ms, out);
        }
    }

    fn maybe_complete_join_else_schedule(&mut self, group: &mut ClassicGroup, now_ms: i64, out: &mut Out) {
        if group.has_all_members_joined() {
            self.complete_join(group, now_ms, out);
        } else {
            self.schedule_join_timeout(group, now_ms);
        }
    }

    fn schedule_join_timeout(&mut self, group: &ClassicGroup, now_ms: i64) {
        self.timers.schedule(
            TimerKey::Join { group_id: group.group_id.clone() },
            now_ms.saturating_add(i64::from(group.rebalance_timeout_ms())),
            TimerAction::CompleteJoin,
        );
    }

    /// Completes the join phase early once everyone is in, except during the initial delay,
    /// which always runs its course.
    fn maybe_complete_join_phase(&mut self, group: &mut ClassicGroup, now_ms: i64, out: &mut Out) {
        if group.state == GroupState::PreparingRebalance
            && group.previous_state != GroupState::Empty
            && group.has_all_members_joined()
        {
            self.complete_join(group, now_ms, out);
        }
    }

    /// Kafka's `completeClassicGroupJoin`: dynamic members that did not rejoin are dropped
    /// (static ones keep their place, KIP-345), the generation advances and every parked
    /// JoinGroup is answered; the leader gets the members' metadata to compute the assignment.
    fn complete_join(&mut self, group: &mut ClassicGroup, now_ms: i64, out: &mut Out) {
        if group.state != GroupState::PreparingRebalance {
            return;
        }
        self.timers.cancel(&TimerKey::Join { group_id: group.group_id.clone() });
        let not_rejoined: Vec<String> = group
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none() && !m.is_static())
            .map(|m| m.member_id.clone())
            .collect();
        for member_id in not_rejoined {
            self.remove_member(group, &member_id, out);
        }

        if !group.maybe_elect_new_joined_leader() && !group.members.is_empty() {
            // Only static members remain and none rejoined: wait another rebalance timeout,
            // their sessions will expire if they are gone.
            self.schedule_join_timeout(group, now_ms);
            return;
        }

        init_next_generation(group, now_ms);
        if group.state == GroupState::Empty {
            out.persist(group_metadata_record(group));
            return;
        }
        let leader_members = group.join_response_members();
        let member_ids: Vec<String> = group.members.keys().cloned().collect();
        for member_id in member_ids {
            let members = if group.is_leader(&member_id) { leader_members.clone() } else { Vec::new() };
            let response = current_generation_response(group, &member_id, members);
            let Some(member) = group.members.get_mut(&member_id) else {
                continue;
            };
            if let Some(parked) = member.awaiting_join.take() {
                out.respond(parked, Response::JoinGroup(response));
            }
            member.is_new = false;
            let session_timeout_ms = member.session_timeout_ms;
            schedule_heartbeat(&mut self.timers, &group.group_id, &member_id, session_timeout_ms, now_ms);
            group.pending_sync_members.insert(member_id);
        }
        // Members that never send SyncGroup are removed after a rebalance timeout (Kafka's
        // `schedulePendingSync`), so a vanished follower cannot hold the group forever.
        self.timers.schedule(
            TimerKey::Sync { group_id: group.group_id.clone() },
            now_ms.saturating_add(i64::from(group.rebalance_timeout_ms())),
            TimerAction::ExpireSync { generation_id: group.generation_id },
        );
    }

    pub(crate) fn complete_join_by_id(&mut self, group_id: &str, now_ms: i64, out: &mut Out) {
        self.with_group(group_id, |this, group| this.complete_join(group, now_ms, out));
    }

    /// Kafka's `tryCompleteInitialRebalanceElseSchedule`: while members keep arriving, the
    /// initial delay is extended by up to `group.initial.rebalance.delay.ms` at a time, never
    /// past the rebalance timeout.
    pub(crate) fn try_complete_initial_rebalance(
        &mut self,
        group_id: &str,
        delay_ms: i32,
        remaining_ms: i32,
        now_ms: i64,
        out: &mut Out,
    ) {
        let initial_delay_ms = self.config.group_initial_rebalance_delay_ms.max(0);
        self.with_group(group_id, |this, group| {
            if group.new_member_added && remaining_ms != 0 {
                group.new_member_added = false;
                let new_delay_ms = initial_delay_ms.min(remaining_ms);
                let new_remaining_ms = remaining_ms.saturating_sub(delay_ms).max(0);
                this.timers.schedule(
                    TimerKey::Join { group_id: group.group_id.clone() },
                    now_ms.saturating_add(i64::from(new_delay_ms)),
                    TimerAction::InitialJoin { delay_ms: new_delay_ms, remaining_ms: new_remaining_ms },
                );
            } else {
                this.complete_join(group, now_ms, out);
            }
        });
    }

    /// Session timeout of a member or KIP-394 pending member (Kafka's
    /// `expireClassicGroupMemberHeartbeat`).
    pub(crate) fn expire_heartbeat(&mut self, group_id: &str, member_id: &str, now_ms: i64, out: &mut Out) {
        self.with_group(group_id, |this, group| {
            if group.pending_join_members.remove(member_id) {
                if group.state == GroupState::PreparingRebalance && group.has_all_members_joined() {
                    this.complete_join(group, now_ms, out);
                }
                return;
            }
            let expired = group.members.get(member_id).is_some_and(|m| !m.has_satisfied_heartbeat());
            if !expired {
                return;
            }
            this.remove_member(group, member_id, out);
            match group.state {
                GroupState::Stable | GroupState::CompletingRebalance => {
                    this.maybe_prepare_rebalance_or_complete_join(group, now_ms, out)
                }
                GroupState::PreparingRebalance if group.has_all_members_joined() => {
                    this.complete_join(group, now_ms, out)
                }
                _ => {}
            }
        });
    }

    /// Kafka's `expirePendingSync`: members that did not send SyncGroup within the rebalance
    /// timeout are removed and the group rebalances without them.
    pub(crate) fn expire_pending_sync(&mut self, group_id: &str, generation_id: i32, now_ms: i64, out: &mut Out) {
        self.with_group(group_id, |this, group| {
            if generation_id != group.generation_id
                || !matches!(group.state, GroupState::CompletingRebalance | GroupState::Stable)
                || group.pending_sync_members.is_empty()
            {
                return;
            }
            let pending: Vec<String> = group.pending_sync_members.iter().cloned().collect();
            for member_id in pending {
                this.remove_member(group, &member_id, out);
            }
            this.prepare_rebalance(group, now_ms, out);
        });
    }

    /// Removes a member and answers whatever it had parked. Kafka answers a parked JoinGroup with
    /// UNKNOWN_MEMBER_ID; a parked SyncGroup it leaves unanswered, Keel answers it the same way.
    pub(crate) fn remove_member(&mut self, group: &mut ClassicGroup, member_id: &str, out: &mut Out) {
        self.timers.cancel(&TimerKey::Heartbeat { group_id: group.group_id.clone(), member_id: member_id.to_owned() });
        let Some(member) = group.remove(member_id) else {
            return;
        };
        if let Some(parked) = member.awaiting_join {
            join_error(parked, "", ErrorCode::UNKNOWN_MEMBER_ID, out);
        }
        if let Some(parked) = member.awaiting_sync {
            sync_error(parked, ErrorCode::UNKNOWN_MEMBER_ID, out);
        }
    }

    fn remove_sync_expiration(&mut self, group: &mut ClassicGroup) {
        group.pending_sync_members.clear();
        self.timers.cancel(&TimerKey::Sync { group_id: group.group_id.clone() });
    }

    fn reset_and_propagate_assignment_with_error(
        timers: &mut crate::timer::Timers,
        group: &mut ClassicGroup,
        error: ErrorCode,
        now_ms: i64,
        out: &mut Out,
    ) {
        for member in group.members.values_mut() {
            member.assignment = Bytes::new();
        }
        Self::propagate_assignment(timers, group, error, now_ms, out);
    }

    /// Answers every parked SyncGroup with the member's assignment (or `error`), and restarts
    /// those members' sessions: a session that ran out while they waited was ignored.
    fn propagate_assignment(
        timers: &mut crate::timer::Timers,
        group: &mut ClassicGroup,
        error: ErrorCode,
        now_ms: i64,
        out: &mut Out,
    ) {
        let (protocol_type, protocol_name) =
            if error.is_none() { (group.protocol_type.clone(), group.protocol_name.clone()) } else { (None, None) };
        for member in group.members.values_mut() {
            if let Some(parked) = member.awaiting_sync.take() {
                out.respond(
                    parked,
                    Response::SyncGroup(SyncGroupResponse {
                        error_code: error,
                        protocol_type: protocol_type.clone(),
                        protocol_name: protocol_name.clone(),
                        assignment: member.assignment.clone(),
                    }),
                );
                schedule_heartbeat(timers, &group.group_id, &member.member_id, member.session_timeout_ms, now_ms);
            }
        }
    }

    // ---------------------------------------------------------------- SyncGroup

    fn sync(&mut self, id: RequestId, request: SyncGroup, now_ms: i64, out: &mut Out) {
        if request.group_id.is_empty() {
            return sync_error(id, ErrorCode::INVALID_GROUP_ID, out);
        }
        let handled = self.with_group(&request.group_id.clone(), |this, group| {
            if group.state == GroupState::Empty {
                return sync_error(id, ErrorCode::UNKNOWN_MEMBER_ID, out);
            }
            if let Err(error) = validate_sync_group(group, &request) {
                return sync_error(id, error, out);
            }
            let member_id = request.member_id.as_str();
            match group.state {
                GroupState::PreparingRebalance => sync_error(id, ErrorCode::REBALANCE_IN_PROGRESS, out),
                GroupState::CompletingRebalance => {
                    if let Some(member) = group.members.get_mut(member_id) {
                        if let Some(superseded) = member.awaiting_sync.replace(id) {
                            // As for JoinGroup: Kafka drops the earlier request, Keel answers it.
                            if superseded != id {
                                sync_error(superseded, ErrorCode::REBALANCE_IN_PROGRESS, out);
                            }
                        }
                    }
                    this.remove_pending_sync_member(group, member_id);
                    // Only the leader's assignments count; a follower's are ignored, as Kafka.
                    if group.is_leader(member_id) {
                        this.complete_sync(group, &request, now_ms, out);
                    }
                }
                GroupState::Stable => {
                    this.remove_pending_sync_member(group, member_id);
                    let assignment = group.members.get(member_id).map(|m| m.assignment.clone()).unwrap_or_default();
                    out.respond(
                        id,
                        Response::SyncGroup(SyncGroupResponse {
                            error_code: ErrorCode::NONE,
                            protocol_type: group.protocol_type.clone(),
                            protocol_name: group.protocol_name.clone(),
                            assignment,
                        }),
                    );
                }
                GroupState::Empty | GroupState::Dead | GroupState::Assigning | GroupState::Reconciling => {
                    sync_error(id, ErrorCode::COORDINATOR_NOT_AVAILABLE, out)
                }
            }
        });
        if handled.is_none() {
            sync_error(id, ErrorCode::UNKNOWN_MEMBER_ID, out);
        }
    }

    /// The leader's SyncGroup: members it left out get an empty assignment, the group metadata
    /// record is written, and only then do the parked SyncGroups get their assignments.
    fn complete_sync(&mut self, group: &mut ClassicGroup, request: &SyncGroup, now_ms: i64, out: &mut Out) {
        for member in group.members.values_mut() {
            // The last entry for a member id wins, as with Kafka's HashMap.
            member.assignment = request
                .assignments
                .iter()
                .rev()
                .find(|a| a.member_id == member.member_id)
                .map(|a| a.assignment.clone())
                .unwrap_or_default();
        }
        // Written before the transition: the record carries the CompletingRebalance timestamp,
        // as Kafka's (which transitions only once the append is done).
        out.persist(group_metadata_record(group));
        Self::propagate_assignment(&mut self.timers, group, ErrorCode::NONE, now_ms, out);
        group.transition_to(GroupState::Stable, now_ms);
    }

    fn remove_pending_sync_member(&mut self, group: &mut ClassicGroup, member_id: &str) {
        group.pending_sync_members.remove(member_id);
        let cancel = match group.state {
            GroupState::CompletingRebalance | GroupState::Stable => group.pending_sync_members.is_empty(),
            _ => true,
        };
        if cancel {
            self.timers.cancel(&TimerKey::Sync { group_id: group.group_id.clone() });
        }
    }

    // ---------------------------------------------------------------- Heartbeat

    fn heartbeat_error(&mut self, request: &Heartbeat, now_ms: i64) -> ErrorCode {
        if request.group_id.is_empty() {
            return ErrorCode::INVALID_GROUP_ID;
        }
        let Some(group) = self.groups.get(&request.group_id) else {
            return ErrorCode::UNKNOWN_MEMBER_ID;
        };
        if let Err(error) = group.validate_member(&request.member_id, request.group_instance_id.as_deref()) {
            return error;
        }
        if request.generation_id != group.generation_id {
            return ErrorCode::ILLEGAL_GENERATION;
        }
        let (error, reschedule) = match group.state {
            GroupState::Empty => (ErrorCode::UNKNOWN_MEMBER_ID, false),
            // The member must rejoin; its heartbeat still proves it alive.
            GroupState::PreparingRebalance => (ErrorCode::REBALANCE_IN_PROGRESS, true),
            // Consumers heartbeat between JoinGroup and SyncGroup too: normal heartbeats.
            GroupState::CompletingRebalance | GroupState::Stable => (ErrorCode::NONE, true),
            GroupState::Dead | GroupState::Assigning | GroupState::Reconciling => {
                (ErrorCode::COORDINATOR_NOT_AVAILABLE, false)
            }
        };
        if reschedule {
            if let Some(member) = group.members.get(&request.member_id) {
                let session_timeout_ms = member.session_timeout_ms;
                self.schedule_heartbeat(&request.group_id, &request.member_id, session_timeout_ms, now_ms);
            }
        }
        error
    }

    // --------------------------------------------------------------- LeaveGroup

    fn leave(&mut self, request: LeaveGroup, now_ms: i64, out: &mut Out) -> LeaveGroupResponse {
        if request.group_id.is_empty() {
            return LeaveGroupResponse { error_code: ErrorCode::INVALID_GROUP_ID, members: Vec::new() };
        }
        let unknown = || LeaveGroupResponse {
            error_code: ErrorCode::NONE,
            members: request
                .members
                .iter()
                .map(|m| LeaveMemberResponse {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    error_code: ErrorCode::UNKNOWN_MEMBER_ID,
                })
                .collect(),
        };
        let response = self.with_group(&request.group_id.clone(), |this, group| {
            let mut responses = Vec::with_capacity(request.members.len());
            for leaving in &request.members {
                let error = if leaving.member_id.is_empty() {
                    // Admin removal of a static member by instance id (KIP-345).
                    match leaving
                        .group_instance_id
                        .as_ref()
                        .and_then(|instance_id| group.static_members.get(instance_id).cloned())
                    {
                        Some(member_id) => {
                            this.remove_member(group, &member_id, out);
                            ErrorCode::NONE
                        }
                        None => ErrorCode::UNKNOWN_MEMBER_ID,
                    }
                } else if group.pending_join_members.contains(&leaving.member_id) {
                    this.remove_member(group, &leaving.member_id, out);
                    ErrorCode::NONE
                } else {
                    match group.validate_member(&leaving.member_id, leaving.group_instance_id.as_deref()) {
                        Ok(()) => {
                            this.remove_member(group, &leaving.member_id, out);
                            ErrorCode::NONE
                        }
                        Err(error) => error,
                    }
                };
                responses.push(LeaveMemberResponse {
                    member_id: leaving.member_id.clone(),
                    group_instance_id: leaving.group_instance_id.clone(),
                    error_code: error,
                });
            }
            if responses.iter().any(|r| r.error_code.is_none()) {
                match group.state {
                    GroupState::Stable | GroupState::CompletingRebalance => {
                        this.maybe_prepare_rebalance_or_complete_join(group, now_ms, out)
                    }
                    GroupState::PreparingRebalance => this.maybe_complete_join_phase(group, now_ms, out),
                    GroupState::Empty | GroupState::Dead | GroupState::Assigning | GroupState::Reconciling => {}
                }
            }
            LeaveGroupResponse { error_code: ErrorCode::NONE, members: responses }
        });
        response.unwrap_or_else(unknown)
    }
}

/// Kafka's `initNextGeneration`.
fn init_next_generation(group: &mut ClassicGroup, now_ms: i64) {
    group.generation_id = group.generation_id.wrapping_add(1);
    if group.members.is_empty() {
        group.protocol_name = None;
        group.subscribed_topics = group.compute_subscribed_topics();
        group.transition_to(GroupState::Empty, now_ms);
    } else {
        group.protocol_name = group.select_protocol();
        group.subscribed_topics = group.compute_subscribed_topics();
        group.transition_to(GroupState::CompletingRebalance, now_ms);
    }
    group.pending_sync_members.clear();
}

/// A successful JoinGroup response for the current generation.
fn current_generation_response(
    group: &ClassicGroup,
    member_id: &str,
    members: Vec<crate::api::JoinGroupMember>,
) -> JoinGroupResponse {
    JoinGroupResponse {
        error_code: ErrorCode::NONE,
        generation_id: group.generation_id,
        protocol_type: group.protocol_type.clone(),
        protocol_name: group.protocol_name.clone(),
        leader: group.leader_or_empty(),
        skip_assignment: false,
        member_id: member_id.to_owned(),
        members,
    }
}

/// Kafka's `validateSyncGroup`: member, generation, then protocol type/name (v5+) when both
/// the request and the group have one.
fn validate_sync_group(group: &ClassicGroup, request: &SyncGroup) -> Result<(), ErrorCode> {
    group.validate_member(&request.member_id, request.group_instance_id.as_deref())?;
    if request.generation_id != group.generation_id {
        return Err(ErrorCode::ILLEGAL_GENERATION);
    }
    let inconsistent = |requested: &Option<String>, current: &Option<String>| matches!((requested, current), (Some(a), Some(b)) if a != b);
    if inconsistent(&request.protocol_type, &group.protocol_type)
        || inconsistent(&request.protocol_name, &group.protocol_name)
    {
        return Err(ErrorCode::INCONSISTENT_GROUP_PROTOCOL);
    }
    Ok(())
}
