//! The private network the functions run in: VPC, two private subnets, their
//! route table, the Lambda security group and the S3/DynamoDB gateway
//! endpoints (no NAT gateway).
//!
//! Identity: every object is created with its tags in the same call
//! (`TagSpecifications`), so the stack and logical-id tags find it even when
//! the state file is lost; there is never an untagged window.
//!
//! With `--no-vpc` these resources are "unwanted": `define()` reverses their
//! dependencies (they wait for the functions to leave the VPC) and the
//! engine deletes them if they exist.

use crate::engine::context::Cx;
use crate::engine::resource::{check, Live, Record, Resource};
use crate::resources::{found, is_code, retry_while, tags_drift};
use crate::stack::{ids, TAG_RESOURCE, TAG_STACK};
use anyhow::{bail, Context, Result};
use async_trait::async_trait;
use aws_sdk_ec2::client::Waiters;
use aws_sdk_ec2::types::{
    AttributeBooleanValue, Filter, IpPermission, IpRange, ResourceType, Tag, TagSpecification,
    VpcAttributeName, VpcEndpointType, VpcState,
};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

pub const VPC_CIDR: &str = "10.0.0.0/16";
pub const SUBNET_CIDRS: [&str; 2] = ["10.0.1.0/24", "10.0.2.0/24"];
/// The only rule of the Lambda security group: HTTPS out (AWS APIs, through
/// the gateway endpoints or their public endpoints).
pub const EGRESS_RULE: &str = "tcp:443-443:0.0.0.0/0";

/// What a network resource needs to know besides its own settings.
#[derive(Clone, Debug)]
pub struct Net {
    pub id: String,
    pub deps: Vec<String>,
    /// False with `--no-vpc`.
    pub wanted: bool,
}

/// The `Resource` methods every network resource answers from its `Net`.
macro_rules! net_resource {
    () => {
        fn id(&self) -> &str {
            &self.net.id
        }
        fn depends_on(&self) -> Vec<String> {
            self.net.deps.clone()
        }
        fn wanted(&self) -> bool {
            self.net.wanted
        }
    };
}

fn filters(cx: &Cx, id: &str) -> Vec<Filter> {
    filters_any(cx, &[id])
}

/// The stack's resources with any of these logical ids (one Describe for
/// siblings such as the two subnets).
fn filters_any(cx: &Cx, ids: &[&str]) -> Vec<Filter> {
    vec![
        Filter::builder()
            .name(format!("tag:{TAG_STACK}"))
            .values(&cx.stack.suffix)
            .build(),
        Filter::builder()
            .name(format!("tag:{TAG_RESOURCE}"))
            .set_values(Some(ids.iter().map(|s| s.to_string()).collect()))
            .build(),
    ]
}

/// Whether EC2 tags name this logical id.
fn is_resource(tags: &[Tag], id: &str) -> bool {
    tags.iter()
        .any(|t| t.key() == Some(TAG_RESOURCE) && t.value() == Some(id))
}

fn tag_spec(cx: &Cx, kind: ResourceType, id: &str, name: &str) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(kind)
        .set_tags(Some(ec2_tags(&cx.stack.tags(id, name))))
        .build()
}

fn ec2_tags(m: &BTreeMap<String, String>) -> Vec<Tag> {
    m.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

fn tag_map(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_string(),
                t.value().unwrap_or_default().to_string(),
            ))
        })
        .collect()
}

async fn put_tags(cx: &Cx, resource_id: &str, id: &str, name: &str) -> Result<()> {
    cx.aws
        .ec2
        .create_tags()
        .resources(resource_id)
        .set_tags(Some(ec2_tags(&cx.stack.tags(id, name))))
        .send()
        .await
        .context("ec2:CreateTags failed")?;
    Ok(())
}

/// Retries a delete that fails while Lambda's network interfaces linger
/// (up to ~45 minutes after a VPC function is deleted or moved out).
async fn delete_retrying_enis<T, E, F, Fut>(cx: &Cx, what: &str, op: F) -> Result<T, E>
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    retry_while(
        cx,
        &["DependencyViolation"],
        cx.stack.opts.eni_timeout,
        &format!("Lambda's network interfaces to be released before deleting the {what}"),
        op,
    )
    .await
}

/// A delete that `delete_retrying_enis` gave up on: when Lambda's network
/// interfaces are still in the way, say what to do about it.
fn enis_left<E>(cx: &Cx, e: E, call: &str) -> anyhow::Error
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata
        + std::error::Error
        + Send
        + Sync
        + 'static,
{
    if is_code(&e, &["DependencyViolation"]) && cx.stopped() {
        return anyhow::Error::new(e).context(format!(
            "{call} failed (interrupted while waiting for Lambda's network interfaces to be released; run `webhook-deploy down` again to resume)"
        ));
    }
    if is_code(&e, &["DependencyViolation"]) {
        return anyhow::anyhow!(
            "{call} failed: DependencyViolation: {}; Lambda's network interfaces were still attached after --eni-timeout {}: run `webhook-deploy down` again later (it resumes where this run stopped), or raise --eni-timeout",
            e.message().unwrap_or("dependent objects remain"),
            humantime::format_duration(cx.stack.opts.eni_timeout)
        );
    }
    anyhow::Error::new(e).context(format!("{call} failed"))
}

// ---------------------------------------------------------------- VPC

pub struct Vpc {
    net: Net,
}

impl Vpc {
    pub fn new(net: Net) -> Self {
        Self { net }
    }

    async fn find(&self, cx: &Cx) -> Result<Option<aws_sdk_ec2::types::Vpc>> {
        let out = cx
            .aws
            .ec2
            .describe_vpcs()
            .set_filters(Some(filters(cx, &self.net.id)))
            .send()
            .await
            .context("ec2:DescribeVpcs failed")?;
        Ok(out.vpcs().first().cloned())
    }
}

fn net_live(physical: &str) -> Live {
    Live::new(physical).attr("id", physical)
}

#[async_trait]
impl Resource for Vpc {
    net_resource!();
    fn kind(&self) -> &'static str {
        "vpc"
    }
    fn desired(&self, cx: &Cx) -> Result<serde_json::Value> {
        let name = cx.stack.vpc_name();
        Ok(json!({ "name": name, "cidr": VPC_CIDR, "tags": cx.stack.tags(&self.net.id, &name) }))
    }

    async fn read(&self, cx: &Cx, rec: Option<&Record>) -> Result<Option<Live>> {
        if rec.is_none() && self.net.wanted {
            // Most likely a new stack: the subnets will need the zones right
            // after the VPC is made, so look them up in this first round.
            let lookup = cx.clone();
            tokio::spawn(async move { first_two_zones(&lookup).await.ok() });
        }
        let Some(vpc) = self.find(cx).await? else {
            return Ok(None);
        };
        let vpc_id = vpc.vpc_id().context("VPC without id")?.to_string();
        let mut live = net_live(&vpc_id);
        if !self.net.wanted {
            return Ok(Some(live));
        }
        if vpc.cidr_block() != Some(VPC_CIDR) {
            bail!(
                "VPC {vpc_id} has CIDR {:?} but the stack needs {VPC_CIDR}; a VPC's primary CIDR cannot change: delete it (down) and run up again",
                vpc.cidr_block()
            );
        }
        live.drift.extend(tags_drift(
            &cx.stack.tags(&self.net.id, &cx.stack.vpc_name()),
            &tag_map(vpc.tags()),
        ));
        Ok(Some(live))
    }

    async fn create(&self, cx: &Cx) -> Result<Live> {
        let name = cx.stack.vpc_name();
        let create = cx
            .aws
            .ec2
            .create_vpc()
            .cidr_block(VPC_CIDR)
            .tag_specifications(tag_spec(cx, ResourceType::Vpc, &self.net.id, &name))
            .send();
        // The subnets need the zones next: learn them while the VPC is made,
        // unless the read already started that (a subnet waits for the
        // lookup in flight). A failure is reported by the create that needs them.
        let lookup = cx.clone();
        tokio::spawn(async move { first_two_zones(&lookup).await.ok() });
        let out = create.await.context("ec2:CreateVpc failed")?;
        let vpc = out.vpc().context("ec2:CreateVpc returned no VPC")?;
        let vpc_id = vpc
            .vpc_id()
            .context("ec2:CreateVpc returned no id")?
            .to_string();
        // AWS answers `pending`; an answer already `available` needs no wait.
        if vpc.state() != Some(&VpcState::Available) {
            cx.say("waiting for the VPC to become available");
            let wait = cx
                .aws
                .ec2
                .wait_until_vpc_available()
                .vpc_ids(&vpc_id)
                .wait(Duration::from_secs(300));
            cx.unless_stopped("waiting for the VPC to become available", wait)
                .await?
                .context("the VPC did not become available within 5 minutes")?;
        }
        Ok(net_live(&vpc_id))
    }

    async fn update(&self, cx: &Cx, live: &Live) -> Result<Live> {
        let vpc_id = &live.physical_id;
        if live.drift.iter().any(|d| d.field == "tags") {
            put_tags(cx, vpc_id, &self.net.id, &cx.stack.vpc_name()).await?;
        }
        Ok(net_live(vpc_id))
    }

    async fn delete(&self, cx: &Cx, _rec: Option<&Record>) -> Result<bool> {
        let Some(vpc) = self.find(cx).await? else {
            return Ok(false);
        };
        let vpc_id = vpc.vpc_id().unwrap_or_default().to_string();
        match delete_retrying_enis(cx, "VPC", || cx.aws.ec2.delete_vpc().vpc_id(&vpc_id).send())
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_code(&e, &["InvalidVpcID.NotFound"]) => Ok(false),
            Err(e) => Err(enis_left(cx, e, "ec2:DeleteVpc")),
        }
    }
}

// ---------------------------------------------------------------- VPC DNS

/// The VPC's two DNS attributes, a resource of their own so that the
/// subnets and route table are made while they are set (nothing but the
/// functions needs them). They exist exactly while the VPC does.
pub struct VpcDns {
    net: Net,
}

impl VpcDns {
    pub fn new(net: Net) -> Self {
        Self { net }
    }

    async fn attribute(cx: &Cx, vpc_id: &str, attr: VpcAttributeName) -> Result<bool> {
        let out = cx
            .aws
            .ec2
            .describe_vpc_attribute()
            .vpc_id(vpc_id)
            .attribute(attr)
            .send()
            .await
            .context("ec2:DescribeVpcAttribute failed")?;
        let v = match out.enable_dns_hostnames() {
            Some(h) => h.value(),
            None => out.enable_dns_support().and_then(|s| s.value()),
        };
        Ok(v.unwrap_or(false))
    }

    /// Turns on what is off: support first, as hostnames need it. One
    /// attribute per call (the API's rule).
    async fn enable(cx: &Cx, vpc_id: &str, support: bool, hostnames: bool) -> Result<()> {
        let on = || AttributeBooleanValue::builder().value(true).build();
        let ec2 = &cx.aws.ec2;
        if support {
            ec2.modify_vpc_attribute()
                .vpc_id(vpc_id)
                .enable_dns_support(on())
                .send()
                .await
                .context("ec2:ModifyVpcAttribute (DNS support) failed")?;
        }
        if hostnames {
            ec2.modify_vpc_attribute()
                .vpc_id(vpc_id)
                .enable_dns_hostnames(on())
                .send()
                .await
                .context("ec2:ModifyVpcAttribute (DNS hostnames) failed")?;
        }
        Ok(())
    }
}

#[async_trait]
impl Resource for VpcDns {
    net_resource!();
    fn kind(&self) -> &'static str {
        "vpc-dns"
    }
    fn inside(&self) -> Option<&str> {
        Some(ids::VPC)
    }
    fn desired(&self, _cx: &Cx) -> Result<serde_json::Value> {
        Ok(json!({ "vpc": ids::VPC, "dns_hostnames": true, "dns_support": true }))
    }

    async fn read(&self, cx: &Cx, rec: Option<&Record>) -> Result<Option<Live>> {
        if !self.net.wanted {
            // Runs before the VPC is looked at; the record says whether
            // there is something to remove (with the VPC).
            return Ok(rec.map(|r| Live::new(&r.physical_id)));
        }
        let vpc_id = cx.attr(ids::VPC, "id")?;
        let (hostnames, support) = tokio::try_join!(
            Self::attribute(cx, &vpc_id, VpcAttributeName::EnableDnsHostnames),
            Self::attribute(cx, &vpc_id, VpcAttributeName::EnableDnsSupport)
        )?;
        let mut live = Live::new(&vpc_id);
        check(&mut live.drift, "dns_hostnames", &true, &hostnames);
        check(&mut live.drift, "dns_support", &true, &support);
        Ok(Some(live))
    }

    async fn create(&self, cx: &Cx) -> Result<Live> {
        // Only for a VPC this run created, where DNS support is already on
        // (CreateVpc's documented default); a later read checks both.
        let vpc_id = cx.attr(ids::VPC, "id")?;
        Self::enable(cx, &vpc_id, false, true).await?;
        Ok(Live::new(vpc_id))
    }

    async fn update(&self, cx: &Cx, live: &Live) -> Result<Live> {
        let off = |f: &str| live.drift.iter().any(|d| d.field == f);
        Self::enable(
            cx,
            &live.physical_id,
            off("dns_support"),
            off("dns_hostnames"),
        )
        .await?;
        Ok(Live::new(&live.physical_id))
    }

    async fn delete(&self, cx: &Cx, rec: Option<&Record>) -> Result<bool> {
        // Deleted with the VPC, which waits for this: there is something to
        // delete while the recorded VPC is there.
        let Some(vpc_id) = rec
            .map(|r| r.physical_id.as_str())
            .filter(|id| !id.is_empty())
        else {
            return Ok(false);
        };
        let answer = cx
            .aws
            .ec2
            .describe_vpc_attribute()
            .vpc_id(vpc_id)
            .attribute(VpcAttributeName::EnableDnsSupport)
            .send()
            .await;
        Ok(found(
            answer,
            &["InvalidVpcID.NotFound"],
            "ec2:DescribeVpcAttribute",
        )?
        .is_some())
    }
}

// ---------------------------------------------------------------- subnets

pub struct Subnet {
    net: Net,
    index: usize,
}

impl Subnet {
    pub fn new(net: Net, index: usize) -> Self {
        Self { net, index }
    }

    fn name(&self, cx: &Cx) -> String {
        cx.stack
            .name(&format!("webhook-private-subnet-{}", self.index + 1))
    }

    async fn find(&self, cx: &Cx) -> Result<Option<aws_sdk_ec2::types::Subnet>> {
        // Both subnets in one call.
        let out = cx
            .batched("ec2:DescribeSubnets", || async {
                cx.aws
                    .ec2
                    .describe_subnets()
                    .set_filters(Some(filters_any(cx, &ids::SUBNETS)))
                    .send()
                    .await
                    .context("ec2:DescribeSubnets failed")
            })
            .await?;
        Ok(out
            .subnets()
            .iter()
            .find(|s| is_resource(s.tags(), &self.net.id))
            .cloned())
    }

    fn live(s: &aws_sdk_ec2::types::Subnet) -> Live {
        let id = s.subnet_id().unwrap_or_default();
        net_live(id).attr("az", s.availability_zone().unwrap_or_default())
    }
}

/// The region's first two availability zones (standard zones, available),
/// discovered at run time rather than hard-coded; looked up once per process
/// (one run, one region) for both subnets.
async fn first_two_zones(cx: &Cx) -> Result<[String; 2]> {
    static ZONES: tokio::sync::OnceCell<(String, [String; 2])> = tokio::sync::OnceCell::const_new();
    let region = &cx.stack.region;
    let (seen, zones) = ZONES
        .get_or_try_init(|| async {
            Ok::<_, anyhow::Error>((region.clone(), lookup_zones(cx).await?))
        })
        .await?;
    if seen == region {
        Ok(zones.clone())
    } else {
        lookup_zones(cx).await
    }
}

async fn lookup_zones(cx: &Cx) -> Result<[String; 2]> {
    let out = cx
        .aws
        .ec2
        .describe_availability_zones()
        .filters(Filter::builder().name("state").values("available").build())
        .send()
        .await
        .context("ec2:DescribeAvailabilityZones failed")?;
    let mut zones: Vec<String> = out
        .availability_zones()
        .iter()
        .filter(|z| z.zone_type().is_none_or(|t| t == "availability-zone"))
        .filter_map(|z| z.zone_name().map(str::to_string))
        .collect();
    zones.sort();
    match zones.as_slice() {
        [a, b, ..] => Ok([a.clone(), b.clone()]),
        _ => bail!(
            "region {} has fewer than two available availability zones",
            cx.stack.region
        ),
    }
}

#[async_trait]
impl Resource for Subnet {
    net_resource!();
    fn kind(&self) -> &'static str {
        "subnet"
    }
    fn inside(&self) -> Option<&str> {
        Some(ids::VPC)
    }
    fn desired(&self, cx: &Cx) -> Result<serde_json::Value> {
        let name = self.name(cx);
        Ok(
            json!({ "name": name, "cidr": SUBNET_CIDRS[self.index], "zone_index": self.index, "tags": cx.stack.tags(&self.net.id, &name) }),
        )
    }

    async fn read(&self, cx: &Cx, _rec: Option<&Record>) -> Result<Option<Live>> {
        let Some(s) = self.find(cx).await? else {
            if self.net.wanted {
                // It will be created once the VPC is: learn the zones now,
                // while the VPC is being made, not after. A failure here is
                // reported by the create that needs them.
                let _ = first_two_zones(cx).await;
            }
            return Ok(None);
        };
        let mut live = Self::live(&s);
        if !self.net.wanted {
            return Ok(Some(live));
        }
        let want_cidr = SUBNET_CIDRS[self.index];
        if s.cidr_block() != Some(want_cidr) {
            bail!(
                "subnet {} has CIDR {:?} but the stack needs {want_cidr}; a subnet cannot be changed in place: delete it and run up again",
                live.physical_id,
                s.cidr_block()
            );
        }
        if let Ok(vpc_id) = cx.attr(ids::VPC, "id") {
            if s.vpc_id() != Some(vpc_id.as_str()) {
                bail!(
                    "subnet {} is tagged for this stack but is in VPC {:?}, not {vpc_id}",
                    live.physical_id,
                    s.vpc_id()
                );
            }
        }
        live.drift.extend(tags_drift(
            &cx.stack.tags(&self.net.id, &self.name(cx)),
            &tag_map(s.tags()),
        ));
        Ok(Some(live))
    }

    async fn create(&self, cx: &Cx) -> Result<Live> {
        let vpc_id = cx.attr(ids::VPC, "id")?;
        let zone = first_two_zones(cx).await?[self.index].clone();
        let out = cx
            .aws
            .ec2
            .create_subnet()
            .vpc_id(vpc_id)
            .cidr_block(SUBNET_CIDRS[self.index])
            .availability_zone(&zone)
            .tag_specifications(tag_spec(
                cx,
                ResourceType::Subnet,
                &self.net.id,
                &self.name(cx),
            ))
            .send()
            .await
            .context("ec2:CreateSubnet failed")?;
        let s = out
            .subnet()
            .context("ec2:CreateSubnet returned no subnet")?;
        Ok(Self::live(s))
    }

    async fn update(&self, cx: &Cx, live: &Live) -> Result<Live> {
        if live.drift.iter().any(|d| d.field == "tags") {
            put_tags(cx, &live.physical_id, &self.net.id, &self.name(cx)).await?;
        }
        Ok(Live {
            drift: vec![],
            ..live.clone()
        })
    }

    async fn delete(&self, cx: &Cx, _rec: Option<&Record>) -> Result<bool> {
        let Some(s) = self.find(cx).await? else {
            return Ok(false);
        };
        let id = s.subnet_id().unwrap_or_default().to_string();
        match delete_retrying_enis(cx, "subnet", || {
            cx.aws.ec2.delete_subnet().subnet_id(&id).send()
        })
        .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_code(&e, &["InvalidSubnetID.NotFound"]) => Ok(false),
            Err(e) => Err(enis_left(cx, e, "ec2:DeleteSubnet")),
        }
    }
}

// ---------------------------------------------------------------- route table

/// The stack's route table, found by its tags; in the opening round of
/// reads the route table and its associations share one call.
async fn find_route_table(cx: &Cx) -> Result<Option<aws_sdk_ec2::types::RouteTable>> {
    let out = cx
        .batched("ec2:DescribeRouteTables", || async {
            cx.aws
                .ec2
                .describe_route_tables()
                .set_filters(Some(filters(cx, ids::ROUTE_TABLE)))
                .send()
                .await
                .context("ec2:DescribeRouteTables failed")
        })
        .await?;
    Ok(out.route_tables().first().cloned())
}

/// Subnet id → association id of a route table's explicit associations.
fn associations(rt: &aws_sdk_ec2::types::RouteTable) -> BTreeMap<String, String> {
    rt.associations()
        .iter()
        .filter(|a| !a.main().unwrap_or(false))
        .filter_map(|a| {
            Some((
                a.subnet_id()?.to_string(),
                a.route_table_association_id()?.to_string(),
            ))
        })
        .collect()
}

/// False when the association was already gone.
async fn disassociate(cx: &Cx, association: &str) -> Result<bool> {
    match cx
        .aws
        .ec2
        .disassociate_route_table()
        .association_id(association)
        .send()
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if is_code(&e, &["InvalidAssociationID.NotFound"]) => Ok(false),
        Err(e) => Err(e).context("ec2:DisassociateRouteTable failed"),
    }
}

pub struct RouteTable {
    net: Net,
}

impl RouteTable {
    pub fn new(net: Net) -> Self {
        Self { net }
    }

    fn name(cx: &Cx) -> String {
        cx.stack.name("webhook-private-rt")
    }
}

#[async_trait]
impl Resource for RouteTable {
    net_resource!();
    fn kind(&self) -> &'static str {
        "route-table"
    }
    fn inside(&self) -> Option<&str> {
        Some(ids::VPC)
    }
    fn desired(&self, cx: &Cx) -> Result<serde_json::Value> {
        let name = Self::name(cx);
        Ok(json!({ "name": name, "tags": cx.stack.tags(&self.net.id, &name) }))
    }

    async fn read(&self, cx: &Cx, _rec: Option<&Record>) -> Result<Option<Live>> {
        let Some(rt) = find_route_table(cx).await? else {
            return Ok(None);
        };
        let mut live = net_live(rt.route_table_id().unwrap_or_default());
        if !self.net.wanted {
            return Ok(Some(live));
        }
        live.drift.extend(tags_drift(
            &cx.stack.tags(&self.net.id, &Self::name(cx)),
            &tag_map(rt.tags()),
        ));
        Ok(Some(live))
    }

    async fn create(&self, cx: &Cx) -> Result<Live> {
        let vpc_id = cx.attr(ids::VPC, "id")?;
        let out = cx
            .aws
            .ec2
            .create_route_table()
            .vpc_id(vpc_id)
            .tag_specifications(tag_spec(
                cx,
                ResourceType::RouteTable,
                &self.net.id,
                &Self::name(cx),
            ))
            .send()
            .await
            .context("ec2:CreateRouteTable failed")?;
        let rt_id = out
            .route_table()
            .and_then(|r| r.route_table_id())
            .context("ec2:CreateRouteTable returned no id")?;
        Ok(net_live(rt_id))
    }

    async fn update(&self, cx: &Cx, live: &Live) -> Result<Live> {
        let rt_id = &live.physical_id;
        if live.drift.iter().any(|d| d.field == "tags") {
            put_tags(cx, rt_id, &self.net.id, &Self::name(cx)).await?;
        }
        Ok(net_live(rt_id))
    }

    async fn delete(&self, cx: &Cx, _rec: Option<&Record>) -> Result<bool> {
        let Some(rt) = find_route_table(cx).await? else {
            return Ok(false);
        };
        let rt_id = rt.route_table_id().unwrap_or_default().to_string();
        // Normally already done by the associations' own delete.
        for assoc in associations(&rt).values() {
            disassociate(cx, assoc).await?;
        }
        match delete_retrying_enis(cx, "route table", || {
            cx.aws
                .ec2
                .delete_route_table()
                .route_table_id(&rt_id)
                .send()
        })
        .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_code(&e, &["InvalidRouteTableID.NotFound"]) => Ok(false),
            Err(e) => Err(enis_left(cx, e, "ec2:DeleteRouteTable")),
        }
    }
}

// ---------------------------------------------------------------- route table associations

/// The route table's explicit subnet associations: exactly the stack's two
/// subnets. Their own resource, so that the route table is made beside the
/// subnets and the endpoints beside the associations.
pub struct RouteTableAssociations {
    net: Net,
}

/// The `associations` attribute: `subnet=association` pairs, for `update`.
fn associations_attr(m: &BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(s, a)| format!("{s}={a}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_associations(attr: &str) -> BTreeMap<String, String> {
    attr.split(',')
        .filter_map(|p| p.split_once('='))
        .map(|(s, a)| (s.to_string(), a.to_string()))
        .collect()
}

impl RouteTableAssociations {
    pub fn new(net: Net) -> Self {
        Self { net }
    }

    fn want_subnets(cx: &Cx) -> Result<BTreeSet<String>> {
        ids::SUBNETS.iter().map(|s| Ok(cx.attr(s, "id")?)).collect()
    }

    fn live(rt_id: &str, have: &BTreeMap<String, String>) -> Live {
        Live::new(rt_id).attr("associations", associations_attr(have))
    }

    /// Associates the stack's subnets that are not, and detaches any other
    /// subnet; all at once. Returns the associations now in place.
    async fn converge(
        &self,
        cx: &Cx,
        rt_id: &str,
        have: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>> {
        let want = Self::want_subnets(cx)?;
        let add = want
            .iter()
            .filter(|s| !have.contains_key(*s))
            .map(|subnet| async move {
                let out = cx
                    .aws
                    .ec2
                    .associate_route_table()
                    .route_table_id(rt_id)
                    .subnet_id(subnet)
                    .send()
                    .await
                    .context("ec2:AssociateRouteTable failed")?;
                let assoc = out
                    .association_id()
                    .context("ec2:AssociateRouteTable returned no association id")?;
                Ok::<_, anyhow::Error>((subnet.clone(), assoc.to_string()))
            });
        let foreign: Vec<(&String, &String)> =
            have.iter().filter(|(s, _)| !want.contains(*s)).collect();
        for (subnet, _) in &foreign {
            cx.say(format!("detaching subnet {subnet} that is not the stack's"));
        }
        let remove = foreign.iter().map(|(_, assoc)| disassociate(cx, assoc));
        let (added, _) = tokio::try_join!(
            futures::future::try_join_all(add),
            futures::future::try_join_all(remove)
        )?;
        let mut now: BTreeMap<String, String> = have
            .iter()
            .filter(|(s, _)| want.contains(*s))
            .map(|(s, a)| (s.clone(), a.clone()))
            .collect();
        now.extend(added);
        Ok(now)
    }
}

#[async_trait]
impl Resource for RouteTableAssociations {
    net_resource!();
    fn kind(&self) -> &'static str {
        "route-table-associations"
    }
    fn inside(&self) -> Option<&str> {
        Some(ids::ROUTE_TABLE)
    }
    fn desired(&self, _cx: &Cx) -> Result<serde_json::Value> {
        Ok(json!({ "route_table": ids::ROUTE_TABLE, "subnets": ids::SUBNETS }))
    }

    async fn read(&self, cx: &Cx, _rec: Option<&Record>) -> Result<Option<Live>> {
        let Some(rt) = find_route_table(cx).await? else {
            return Ok(None);
        };
        let have = associations(&rt);
        let rt_id = rt.route_table_id().unwrap_or_default();
        if !self.net.wanted {
            return Ok((!have.is_empty()).then(|| Self::live(rt_id, &have)));
        }
        let mut live = Self::live(rt_id, &have);
        let subnets: BTreeSet<String> = have.into_keys().collect();
        check(
            &mut live.drift,
            "subnet_associations",
            &Self::want_subnets(cx)?,
            &subnets,
        );
        Ok(Some(live))
    }

    async fn create(&self, cx: &Cx) -> Result<Live> {
        // Only for a route table this run created: it has no associations.
        let rt_id = cx.attr(ids::ROUTE_TABLE, "id")?;
        let now = self.converge(cx, &rt_id, &BTreeMap::new()).await?;
        Ok(Self::live(&rt_id, &now))
    }

    async fn update(&self, cx: &Cx, live: &Live) -> Result<Live> {
        let have = parse_associations(live.attrs.get("associations").map_or("", |s| s));
        let now = self.converge(cx, &live.physical_id, &have).await?;
        Ok(Self::live(&live.physical_id, &now))
    }

    async fn delete(&self, cx: &Cx, _rec: Option<&Record>) -> Result<bool> {
        // What is there now, not what was recorded.
        let Some(rt) = find_route_table(cx).await? else {
            return Ok(false);
        };
        let have = associations(&rt);
        let done =
            futures::future::try_join_all(have.values().map(|a| disassociate(cx, a))).await?;
        Ok(done.contains(&true))
    }
}

// ---------------------------------------------------------------- security group

pub struct SecurityGroup {
    net: Net,
}

/// One rule in a comparable form (`proto:from-to:cidr`) with the single-rule
/// permission that authorizes or revokes it.
fn rules(perms: &[IpPermission]) -> BTreeMap<String, IpPermission> {
    let mut out = BTreeMap::new();
    for p in perms {
        let proto = p.ip_protocol().unwrap_or("-1");
        let ports = format!(
            "{}-{}",
            p.from_port().unwrap_or(-1),
            p.to_port().unwrap_or(-1)
        );
        let base = || {
            IpPermission::builder()
                .ip_protocol(proto)
                .set_from_port(p.from_port())
                .set_to_port(p.to_port())
        };
        for r in p.ip_ranges() {
            let cidr = r.cidr_ip().unwrap_or_default();
            out.insert(
                format!("{proto}:{ports}:{cidr}"),
                base()
                    .ip_ranges(IpRange::builder().cidr_ip(cidr).build())
                    .build(),
            );
        }
        for r in p.ipv6_ranges() {
            let cidr = r.cidr_ipv6().unwrap_or_default();
            out.insert(
                format!("{proto}:{ports}:{cidr}"),
                base().ipv6_ranges(r.clone()).build(),
            );
        }
        for r in p.prefix_list_ids() {
            let pl = r.prefix_list_id().unwrap_or_default();
            out.insert(
                format!("{proto}:{ports}:{pl}"),
                base().prefix_list_ids(r.clone()).build(),
            );
        }
        for r in p.user_id_group_pairs() {
            let g = r.group_id().unwrap_or_default();
            out.insert(
                format!("{proto}:{ports}:{g}"),
                base().user_id_group_pairs(r.clone()).build(),
            );
        }
    }
    out
}

fn https_out() -> IpPermission {
    IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(443)
        .to_port(443)
        .ip_ranges(
            IpRange::builder()
                .cidr_ip("0.0.0.0/0")
                .description("HTTPS to AWS APIs")
                .build(),
        )
        .build()
}

impl SecurityGroup {
    pub fn new(net: Net) -> Self {
        Self { net }
    }

    fn name(cx: &Cx) -> String {
        cx.stack.name("webhook-lambda-sg")
    }

    async fn find(&self, cx: &Cx) -> Result<Option<aws_sdk_ec2::types::SecurityGroup>> {
        let out = cx
            .aws
            .ec2
            .describe_security_groups()
            .set_filters(Some(filters(cx, &self.net.id)))
            .send()
            .await
            .context("ec2:DescribeSecurityGroups failed")?;
        Ok(out.security_groups().first().cloned())
    }

    /// Makes the rules exactly: no ingress, egress TCP 443 only (the
    /// default allow-all egress rule is removed). The changes are
    /// independent, so they go out at once.
    async fn converge_rules(&self, cx: &Cx, sg: &aws_sdk_ec2::types::SecurityGroup) -> Result<()> {
        let id = sg.group_id().unwrap_or_default();
        let egress = rules(sg.ip_permissions_egress());
        let revoke_egress: Vec<IpPermission> = egress
            .iter()
            .filter(|(k, _)| k.as_str() != EGRESS_RULE)
            .map(|(_, p)| p.clone())
            .collect();
        let revoke_ingress: Vec<IpPermission> = rules(sg.ip_permissions()).into_values().collect();
        Self::apply_rules(
            cx,
            id,
            revoke_ingress,
            !egress.contains_key(EGRESS_RULE),
            revoke_egress,
        )
        .await
    }

    async fn apply_rules(
        cx: &Cx,
        id: &str,
        revoke_ingress: Vec<IpPermission>,
        authorize_https: bool,
        revoke_egress: Vec<IpPermission>,
    ) -> Result<()> {
        let ec2 = &cx.aws.ec2;
        // Right after CreateSecurityGroup, EC2 may not know the group yet.
        const VISIBLE: &[&str] = &["InvalidGroup.NotFound"];
        const LIMIT: Duration = Duration::from_secs(60);
        let waiting = "the new security group to be visible in EC2";
        let ingress =
            futures::future::try_join_all(revoke_ingress.into_iter().map(|perm| async move {
                retry_while(cx, VISIBLE, LIMIT, waiting, || {
                    ec2.revoke_security_group_ingress()
                        .group_id(id)
                        .ip_permissions(perm.clone())
                        .send()
                })
                .await
                .context("ec2:RevokeSecurityGroupIngress failed")
                .map(|_| ())
            }));
        let authorize = async {
            if authorize_https {
                retry_while(cx, VISIBLE, LIMIT, waiting, || {
                    ec2.authorize_security_group_egress()
                        .group_id(id)
                        .ip_permissions(https_out())
                        .send()
                })
                .await
                .context("ec2:AuthorizeSecurityGroupEgress failed")?;
            }
            Ok::<_, anyhow::Error>(())
        };
        let egress =
            futures::future::try_join_all(revoke_egress.into_iter().map(|perm| async move {
                match retry_while(cx, VISIBLE, LIMIT, waiting, || {
                    ec2.revoke_security_group_egress()
                        .group_id(id)
                        .ip_permissions(perm.clone())
                        .send()
                })
                .await
                {
                    Ok(_) => Ok(()),
                    // Already gone (a new group's default rule differs): nothing to do.
                    Err(e) if is_code(&e, &["InvalidPermission.NotFound"]) => Ok(()),
                    Err(e) => Err(e).context("ec2:RevokeSecurityGroupEgress failed"),
                }
            }));
        tokio::try_join!(ingress, authorize, egress)?;
        Ok(())
    }
}

/// The egress rule every new VPC security group starts with: all traffic out.
fn default_egress() -> IpPermission {
    IpPermission::builder()
        .ip_protocol("-1")
        .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
        .build()
}

#[async_trait]
impl Resource for SecurityGroup {
    net_resource!();
    fn kind(&self) -> &'static str {
        "security-group"
    }
    fn inside(&self) -> Option<&str> {
        Some(ids::VPC)
    }
    fn desired(&self, cx: &Cx) -> Result<serde_json::Value> {
        let name = Self::name(cx);
        Ok(
            json!({ "name": name, "ingress": [], "egress": [EGRESS_RULE], "tags": cx.stack.tags(&self.net.id, &name) }),
        )
    }

    async fn read(&self, cx: &Cx, _rec: Option<&Record>) -> Result<Option<Live>> {
        let Some(sg) = self.find(cx).await? else {
            return Ok(None);
        };
        let mut live = net_live(sg.group_id().unwrap_or_default());
        if !self.net.wanted {
            return Ok(Some(live));
        }
        let ingress: Vec<String> = rules(sg.ip_permissions()).into_keys().collect();
        let egress: Vec<String> = rules(sg.ip_permissions_egress()).into_keys().collect();
        check(&mut live.drift, "ingress", &Vec::<String>::new(), &ingress);
        check(
            &mut live.drift,
            "egress",
            &vec![EGRESS_RULE.to_string()],
            &egress,
        );
        live.drift.extend(tags_drift(
            &cx.stack.tags(&self.net.id, &Self::name(cx)),
            &tag_map(sg.tags()),
        ));
        Ok(Some(live))
    }

    async fn create(&self, cx: &Cx) -> Result<Live> {
        let vpc_id = cx.attr(ids::VPC, "id")?;
        let name = Self::name(cx);
        let out = cx
            .aws
            .ec2
            .create_security_group()
            .group_name(&name)
            .description("webhook Lambda functions: no ingress, HTTPS egress only")
            .vpc_id(vpc_id)
            .tag_specifications(tag_spec(
                cx,
                ResourceType::SecurityGroup,
                &self.net.id,
                &name,
            ))
            .send()
            .await
            .context("ec2:CreateSecurityGroup failed")?;
        let id = out
            .group_id()
            .context("ec2:CreateSecurityGroup returned no id")?
            .to_string();
        // A new group has no ingress and the default all-traffic egress rule
        // (EC2 documents both), so no need to look before changing them; the
        // next read would name any difference as drift.
        Self::apply_rules(cx, &id, vec![], true, vec![default_egress()]).await?;
        Ok(net_live(&id))
    }

    async fn update(&self, cx: &Cx, live: &Live) -> Result<Live> {
        let sg = self
            .find(cx)
            .await?
            .context("the security group vanished")?;
        let fields: BTreeSet<&str> = live.drift.iter().map(|d| d.field.as_str()).collect();
        if fields.contains("ingress") || fields.contains("egress") {
            self.converge_rules(cx, &sg).await?;
        }
        if fields.contains("tags") {
            put_tags(cx, &live.physical_id, &self.net.id, &Self::name(cx)).await?;
        }
        Ok(net_live(&live.physical_id))
    }

    async fn delete(&self, cx: &Cx, _rec: Option<&Record>) -> Result<bool> {
        let Some(sg) = self.find(cx).await? else {
            return Ok(false);
        };
        let id = sg.group_id().unwrap_or_default().to_string();
        match delete_retrying_enis(cx, "security group", || {
            cx.aws.ec2.delete_security_group().group_id(&id).send()
        })
        .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_code(&e, &["InvalidGroup.NotFound"]) => Ok(false),
            Err(e) => Err(enis_left(cx, e, "ec2:DeleteSecurityGroup")),
        }
    }
}

// ---------------------------------------------------------------- gateway endpoints

pub struct GatewayEndpoint {
    net: Net,
    /// `s3` or `dynamodb`.
    service: &'static str,
}

impl GatewayEndpoint {
    pub fn new(net: Net, service: &'static str) -> Self {
        Self { net, service }
    }

    fn name(&self, cx: &Cx) -> String {
        cx.stack.name(&format!("webhook-{}-endpoint", self.service))
    }

    fn service_name(&self, cx: &Cx) -> String {
        format!("com.amazonaws.{}.{}", cx.stack.region, self.service)
    }

    async fn find(&self, cx: &Cx) -> Result<Option<aws_sdk_ec2::types::VpcEndpoint>> {
        // Both endpoints in one call.
        let out = cx
            .batched("ec2:DescribeVpcEndpoints", || async {
                cx.aws
                    .ec2
                    .describe_vpc_endpoints()
                    .set_filters(Some(filters_any(
                        cx,
                        &[ids::S3_ENDPOINT, ids::DYNAMODB_ENDPOINT],
                    )))
                    .send()
                    .await
                    .context("ec2:DescribeVpcEndpoints failed")
            })
            .await?;
        // Deleted endpoints stay visible for a while. Endpoint states come
        // in lower case ("deleted"), which the shared `State` enum does not
        // match, so compare the text.
        let gone = |e: &&aws_sdk_ec2::types::VpcEndpoint| {
            e.state().is_some_and(|s| {
                matches!(
                    s.as_str().to_ascii_lowercase().as_str(),
                    "deleted" | "deleting" | "failed" | "rejected" | "expired"
                )
            })
        };
        Ok(out
            .vpc_endpoints()
            .iter()
            .find(|e| !gone(e) && is_resource(e.tags(), &self.net.id))
            .cloned())
    }
}

#[async_trait]
impl Resource for GatewayEndpoint {
    net_resource!();
    fn kind(&self) -> &'static str {
        "vpc-endpoint"
    }
    fn inside(&self) -> Option<&str> {
        Some(ids::VPC)
    }
    fn desired(&self, cx: &Cx) -> Result<serde_json::Value> {
        let name = self.name(cx);
        Ok(
            json!({ "name": name, "service": self.service_name(cx), "type": "Gateway", "route_tables": [ids::ROUTE_TABLE], "tags": cx.stack.tags(&self.net.id, &name) }),
        )
    }

    async fn read(&self, cx: &Cx, _rec: Option<&Record>) -> Result<Option<Live>> {
        let Some(ep) = self.find(cx).await? else {
            return Ok(None);
        };
        let mut live = net_live(ep.vpc_endpoint_id().unwrap_or_default());
        if !self.net.wanted {
            return Ok(Some(live));
        }
        if ep.service_name() != Some(self.service_name(cx).as_str()) {
            bail!(
                "endpoint {} is tagged as {} but serves {:?}",
                live.physical_id,
                self.net.id,
                ep.service_name()
            );
        }
        let want: BTreeSet<String> = [cx.attr(ids::ROUTE_TABLE, "id")?].into();
        let have: BTreeSet<String> = ep.route_table_ids().iter().cloned().collect();
        check(&mut live.drift, "route_tables", &want, &have);
        live.drift.extend(tags_drift(
            &cx.stack.tags(&self.net.id, &self.name(cx)),
            &tag_map(ep.tags()),
        ));
        Ok(Some(live))
    }

    async fn create(&self, cx: &Cx) -> Result<Live> {
        let out = cx
            .aws
            .ec2
            .create_vpc_endpoint()
            .vpc_id(cx.attr(ids::VPC, "id")?)
            .service_name(self.service_name(cx))
            .vpc_endpoint_type(VpcEndpointType::Gateway)
            .route_table_ids(cx.attr(ids::ROUTE_TABLE, "id")?)
            .tag_specifications(tag_spec(
                cx,
                ResourceType::VpcEndpoint,
                &self.net.id,
                &self.name(cx),
            ))
            .send()
            .await
            .context("ec2:CreateVpcEndpoint failed")?;
        let id = out
            .vpc_endpoint()
            .and_then(|e| e.vpc_endpoint_id())
            .context("ec2:CreateVpcEndpoint returned no id")?;
        Ok(net_live(id))
    }

    async fn update(&self, cx: &Cx, live: &Live) -> Result<Live> {
        let ep = self.find(cx).await?.context("the endpoint vanished")?;
        let id = live.physical_id.clone();
        for d in &live.drift {
            match d.field.as_str() {
                "route_tables" => {
                    let want = cx.attr(ids::ROUTE_TABLE, "id")?;
                    let remove: Vec<String> = ep
                        .route_table_ids()
                        .iter()
                        .filter(|r| **r != want)
                        .cloned()
                        .collect();
                    let mut req = cx
                        .aws
                        .ec2
                        .modify_vpc_endpoint()
                        .vpc_endpoint_id(&id)
                        .set_remove_route_table_ids((!remove.is_empty()).then_some(remove));
                    if !ep.route_table_ids().contains(&want) {
                        req = req.add_route_table_ids(want);
                    }
                    req.send().await.context("ec2:ModifyVpcEndpoint failed")?;
                }
                "tags" => put_tags(cx, &id, &self.net.id, &self.name(cx)).await?,
                _ => {}
            }
        }
        Ok(net_live(&id))
    }

    async fn delete(&self, cx: &Cx, _rec: Option<&Record>) -> Result<bool> {
        let Some(ep) = self.find(cx).await? else {
            return Ok(false);
        };
        let id = ep.vpc_endpoint_id().unwrap_or_default().to_string();
        let out = match cx
            .aws
            .ec2
            .delete_vpc_endpoints()
            .vpc_endpoint_ids(&id)
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) if is_code(&e, &["InvalidVpcEndpointId.NotFound"]) => return Ok(false),
            Err(e) => return Err(e).context("ec2:DeleteVpcEndpoints failed"),
        };
        if let Some(u) = out.unsuccessful().first() {
            let err = u.error();
            let code = err.and_then(|e| e.code()).unwrap_or("?");
            if code != "InvalidVpcEndpoint.NotFound" && code != "InvalidVpcEndpointId.NotFound" {
                bail!(
                    "ec2:DeleteVpcEndpoints could not delete {id}: {code}: {}",
                    err.and_then(|e| e.message()).unwrap_or("")
                );
            }
            return Ok(false);
        }
        // The endpoint's routes go with it; the route table waits for that.
        cx.say("waiting for the endpoint to be deleted");
        let start = std::time::Instant::now();
        while self.find(cx).await?.is_some() {
            if start.elapsed() > Duration::from_secs(300) {
                bail!("endpoint {id} was not deleted within 5 minutes");
            }
            cx.pause(
                Duration::from_secs(2),
                "waiting for the endpoint to be deleted",
            )
            .await?;
        }
        Ok(true)
    }
}
