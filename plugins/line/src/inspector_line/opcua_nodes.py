"""The OPC UA address space of a single-camera station: the part of OPC 40100 (Machine Vision)
it needs, built node by node instead of importing the official nodeset.

Why a subset built here: asyncua imports the official ``Opc.Ua.MachineVision.NodeSet2.xml``
(790 nodes) in about 9 s on this hardware, on every start, and the file is not part of asyncua.
The nodes below take a few milliseconds. They keep the specification's namespace URI, browse
names and, for the types and states declared here, its numeric node ids (``ns=MV;i=1003``
VisionSystemType, ``i=1017`` VisionStateMachineType, ``i=1021``
VisionAutomaticModeStateMachineType, ``i=1024`` ResultReadyEventType, ...), so a client written
against the specification finds them by the same browse paths. Deviation, on purpose: the
specification's identifier structures (``MeasIdDataType``, ``PartIdDataType``,
``ProductIdDataType``, ``JobIdDataType``, ``RecipeIdExternalDataType``) are carried as plain
``String`` values (their ``Id`` field), so that a PLC needs no structure decoding. What the
specification does not have (the PLC handshake's counter, result code, defect code,
ResultValid, acknowledge, the verdict) lives in the station's own namespace. ``docs/line-opcua.md``
lists every node.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from asyncua import Server, ua
from asyncua.common.node import Node

MV_URI = "http://opcfoundation.org/UA/MachineVision"
"""OPC 40100's namespace URI."""

# Node ids from OPC 40100 1.0 (Opc.Ua.MachineVision.NodeSet2.xml), in the MV namespace.
MV_VISION_SYSTEM_TYPE = 1003
MV_RECIPE_MANAGEMENT_TYPE = 1004
MV_RESULT_MANAGEMENT_TYPE = 1007
MV_VISION_STATE_MACHINE_TYPE = 1017
MV_AUTOMATIC_MODE_STATE_MACHINE_TYPE = 1021
MV_RESULT_READY_EVENT_TYPE = 1024
MV_STATES = {"Preoperational": 5028, "Halted": 5029, "Error": 5030, "Operational": 5031}
"""States of VisionStateMachineType."""
MV_AUTO_STATES = {"Initialized": 5056, "Ready": 5057, "SingleExecution": 5058, "ContinuousExecution": 5059}
"""States of VisionAutomaticModeStateMachineType."""

STATE_OF_LINE: dict[str, tuple[str, str]] = {
    "READY": ("Operational", "Ready"),
    "BUSY": ("Operational", "SingleExecution"),
    "ERROR": ("Error", "Initialized"),
    "HALTED": ("Halted", "Initialized"),
}
"""A station's LineState as (VisionStateMachine state, AutomaticModeStateMachine state)."""

# The ResultReadyEventType properties of the specification this subset declares (name, type).
# (name, type, the property's node id in OPC 40100)
MV_EVENT_FIELDS: tuple[tuple[str, ua.VariantType, int], ...] = (
    ("CreationTime", ua.VariantType.DateTime, 6303),
    ("IsPartial", ua.VariantType.Boolean, 6296),
    ("IsSimulated", ua.VariantType.Boolean, 6297),
    ("JobId", ua.VariantType.String, 6300),
    ("MeasId", ua.VariantType.String, 6299),
    ("PartId", ua.VariantType.String, 6304),
    ("ProductId", ua.VariantType.String, 6143),
    ("ResultId", ua.VariantType.String, 6295),
    ("ResultState", ua.VariantType.Int32, 6298),
)
# The station's own fields on InspectorResultReadyEventType (a subtype of ResultReadyEventType).
ST_EVENT_FIELDS: tuple[tuple[str, ua.VariantType], ...] = (
    ("Counter", ua.VariantType.UInt32),
    ("ResultCode", ua.VariantType.Int16),
    ("DefectCode", ua.VariantType.Int16),
    ("Verdict", ua.VariantType.String),
    ("DefectSummary", ua.VariantType.String),
    ("IsDefault", ua.VariantType.Boolean),
    ("Overrun", ua.VariantType.Boolean),
    ("MissedTrigger", ua.VariantType.Boolean),
    ("InspectionUid", ua.VariantType.String),
)
# Result variables under ResultManagement, in the station namespace: (name, type, initial, writable).
ST_RESULT_VARIABLES: tuple[tuple[str, ua.VariantType, Any, bool], ...] = (
    ("Counter", ua.VariantType.UInt32, 0, False),
    ("ResultCode", ua.VariantType.Int16, 0, False),
    ("DefectCode", ua.VariantType.Int16, 0, False),
    ("PartId", ua.VariantType.String, "", False),
    ("Verdict", ua.VariantType.String, "", False),
    ("DefectSummary", ua.VariantType.String, "", False),
    ("IsDefault", ua.VariantType.Boolean, False, False),
    ("InspectionUid", ua.VariantType.String, "", False),
    ("ResultValid", ua.VariantType.Boolean, False, True),
    ("AckCounter", ua.VariantType.UInt32, 0, True),
)


def nid(identifier: int | str, ns: int = 0) -> ua.NodeId:
    """A numeric or string node id in namespace ``ns``."""
    ident = ua.String(identifier) if isinstance(identifier, str) else ua.Int32(identifier)
    return ua.NodeId(ident, ua.Int16(ns))


_DEFAULTS: dict[ua.VariantType, Any] = {
    ua.VariantType.DateTime: datetime(1601, 1, 1, tzinfo=UTC),
    ua.VariantType.Boolean: False,
    ua.VariantType.String: "",
    ua.VariantType.Int16: 0,
    ua.VariantType.Int32: 0,
    ua.VariantType.UInt32: 0,
}


@dataclasses.dataclass
class StationNodes:
    """Handles on the nodes the link reads and writes."""

    mv: int
    """Namespace index of OPC 40100."""
    st: int
    """Namespace index of the station's own nodes."""
    vision_system: Node
    state_machine: Node
    state: Node
    state_id: Node
    auto_state_machine: Node
    auto_state: Node
    auto_state_id: Node
    line_state: Node
    heartbeat: Node
    active_recipe: Node
    result_management: Node
    results: dict[str, Node]
    event_type: Node
    start_single_job: Node
    trigger: Node
    acknowledge: Node
    prepare_product: Node
    select_recipe: Node


async def _add_node(
    server: Server,
    parent: ua.NodeId,
    nodeid: ua.NodeId,
    name: ua.QualifiedName,
    node_class: ua.NodeClass,
    typedef: ua.NodeId | None,
    reference: int,
    attrs: Any,
) -> Node:
    """One node with the given type definition, without instantiating the type's children (the
    subset adds exactly the children it serves). A node that exists already (a type or state the
    official nodeset declared, see ``nodeset_file``) is used as it is."""
    if not nodeid.is_null() and nodeid in server.iserver.aspace:
        return server.get_node(nodeid)
    item = ua.AddNodesItem()
    item.RequestedNewNodeId = nodeid
    item.BrowseName = name
    item.NodeClass = node_class
    item.ParentNodeId = parent
    item.ReferenceTypeId = nid(reference)
    if typedef is not None:
        item.TypeDefinition = typedef
    attrs.DisplayName = ua.LocalizedText(name.Name)
    item.NodeAttributes = attrs
    (result,) = await server.iserver.isession.add_nodes([item])
    result.StatusCode.check()
    return server.get_node(result.AddedNodeId)


async def _object(
    server: Server,
    parent: ua.NodeId,
    nodeid: ua.NodeId,
    name: ua.QualifiedName,
    typedef: ua.NodeId,
    *,
    reference: int = ua.ObjectIds.HasComponent,
    notifier: bool = False,
) -> Node:
    attrs = ua.ObjectAttributes()
    if notifier:
        attrs.EventNotifier = 1
    return await _add_node(server, parent, nodeid, name, ua.NodeClass.Object, typedef, reference, attrs)


async def _object_type(server: Server, parent: int | ua.NodeId, nodeid: ua.NodeId, name: ua.QualifiedName) -> Node:
    parent_id = parent if isinstance(parent, ua.NodeId) else nid(parent)
    attrs = ua.ObjectTypeAttributes()
    attrs.IsAbstract = False
    return await _add_node(
        server, parent_id, nodeid, name, ua.NodeClass.ObjectType, None, ua.ObjectIds.HasSubtype, attrs
    )


async def _variable(
    server: Server,
    parent: Node,
    ns: int,
    name: str,
    vtype: ua.VariantType,
    value: Any,
    *,
    writable: bool = False,
    prop: bool = False,
    name_ns: int | None = None,
    nodeid: ua.NodeId | None = None,
) -> Node:
    """A variable; its node id is the parent's string id + ``.name`` (stable, for PLCs that
    address nodes by id) unless given."""
    attrs = ua.VariableAttributes()
    attrs.Value = ua.Variant(value, vtype) if value is not None else ua.Variant()
    attrs.DataType = nid(vtype.value)
    attrs.ValueRank = -1
    level = ua.AccessLevel.CurrentRead.mask | (ua.AccessLevel.CurrentWrite.mask if writable else 0)
    attrs.AccessLevel = level
    attrs.UserAccessLevel = level
    typedef = ua.ObjectIds.PropertyType if prop else ua.ObjectIds.BaseDataVariableType
    reference = ua.ObjectIds.HasProperty if prop else ua.ObjectIds.HasComponent
    qname = ua.QualifiedName(name, ns if name_ns is None else name_ns)
    if nodeid is not None and nodeid in server.iserver.aspace:
        return server.get_node(nodeid)  # declared by an imported nodeset
    node = await _add_node(
        server,
        parent.nodeid,
        nodeid or _child_id(parent, name, ns),
        qname,
        ua.NodeClass.Variable,
        nid(typedef),
        reference,
        attrs,
    )
    if prop:  # instance declaration of an event type: mandatory
        await node.add_reference(ua.ObjectIds.ModellingRule_Mandatory, ua.ObjectIds.HasModellingRule)
    return node


def _child_id(parent: Node, name: str, ns: int) -> ua.NodeId:
    ident = parent.nodeid.Identifier
    return nid(f"{ident}.{name}", ns) if isinstance(ident, str) else nid(0, ns)


async def _state_variable(server: Server, machine: Node, ns: int, state: str, state_id: ua.NodeId) -> tuple[Node, Node]:
    """A FiniteStateVariable ``CurrentState`` (LocalizedText) with its ``Id`` property."""
    attrs = ua.VariableAttributes()
    attrs.Value = ua.Variant(ua.LocalizedText(state), ua.VariantType.LocalizedText)
    attrs.DataType = nid(ua.ObjectIds.LocalizedText)
    attrs.ValueRank = -1
    attrs.AccessLevel = attrs.UserAccessLevel = ua.AccessLevel.CurrentRead.mask
    current = await _add_node(
        server,
        machine.nodeid,
        _child_id(machine, "CurrentState", ns),
        ua.QualifiedName("CurrentState", 0),
        ua.NodeClass.Variable,
        nid(ua.ObjectIds.FiniteStateVariableType),
        ua.ObjectIds.HasComponent,
        attrs,
    )
    id_attrs = ua.VariableAttributes()
    id_attrs.Value = ua.Variant(state_id, ua.VariantType.NodeId)
    id_attrs.DataType = nid(ua.ObjectIds.NodeId)
    id_attrs.ValueRank = -1
    id_attrs.AccessLevel = id_attrs.UserAccessLevel = ua.AccessLevel.CurrentRead.mask
    ident = await _add_node(
        server,
        current.nodeid,
        _child_id(current, "Id", ns),
        ua.QualifiedName("Id", 0),
        ua.NodeClass.Variable,
        nid(ua.ObjectIds.PropertyType),
        ua.ObjectIds.HasProperty,
        id_attrs,
    )
    return current, ident


async def _method(
    server: Server,
    parent: Node,
    nodeid: ua.NodeId,
    name: ua.QualifiedName,
    func: Any,
    inputs: list[tuple[str, ua.VariantType, str]],
    outputs: list[tuple[str, ua.VariantType, str]],
) -> Node:
    def args(spec: list[tuple[str, ua.VariantType, str]]) -> list[ua.Argument]:
        out = []
        for arg_name, vtype, description in spec:
            arg = ua.Argument()
            arg.Name = arg_name
            arg.DataType = nid(vtype.value)
            arg.ValueRank = -1
            arg.Description = ua.LocalizedText(description)
            out.append(arg)
        return out

    return await parent.add_method(nodeid, name, func, args(inputs), args(outputs))


async def build(
    server: Server,
    *,
    namespace_uri: str,
    object_name: str,
    handlers: dict[str, Any],
) -> StationNodes:
    """Declare the subset's types and the station's instance under Objects.

    ``handlers`` maps ``start_single_job``, ``trigger``, ``acknowledge``, ``prepare_product`` and
    ``select_recipe`` to asyncua method callbacks (``(parent_nodeid, *args) -> list[Variant]``).
    """
    mv = await server.register_namespace(MV_URI)
    st = await server.register_namespace(namespace_uri)

    def mvid(i: int) -> ua.NodeId:
        return nid(i, mv)

    def qn(name: str, ns: int) -> ua.QualifiedName:
        return ua.QualifiedName(name, ns)

    # ---- types (spec node ids in the MV namespace)
    base_object = ua.ObjectIds.BaseObjectType
    await _object_type(server, base_object, mvid(MV_VISION_SYSTEM_TYPE), qn("VisionSystemType", mv))
    await _object_type(server, base_object, mvid(MV_RECIPE_MANAGEMENT_TYPE), qn("RecipeManagementType", mv))
    await _object_type(server, base_object, mvid(MV_RESULT_MANAGEMENT_TYPE), qn("ResultManagementType", mv))
    fsm = ua.ObjectIds.FiniteStateMachineType
    vsm_type = await _object_type(server, fsm, mvid(MV_VISION_STATE_MACHINE_TYPE), qn("VisionStateMachineType", mv))
    auto_type = await _object_type(
        server, fsm, mvid(MV_AUTOMATIC_MODE_STATE_MACHINE_TYPE), qn("VisionAutomaticModeStateMachineType", mv)
    )
    for machine_type, states in ((vsm_type, MV_STATES), (auto_type, MV_AUTO_STATES)):
        for state_name, number in states.items():
            await _object(server, machine_type.nodeid, mvid(number), qn(state_name, mv), nid(ua.ObjectIds.StateType))

    mv_event = await _object_type(
        server, ua.ObjectIds.BaseEventType, mvid(MV_RESULT_READY_EVENT_TYPE), qn("ResultReadyEventType", mv)
    )
    # Each declaration holds a typed default: asyncua's event objects take a field's type from it.
    for name, vtype, number in MV_EVENT_FIELDS:
        await _variable(server, mv_event, mv, name, vtype, _DEFAULTS[vtype], prop=True, nodeid=mvid(number))
    event_type = await _object_type(
        server, mv_event.nodeid, nid("InspectorResultReadyEventType", st), qn("InspectorResultReadyEventType", st)
    )
    for name, vtype in ST_EVENT_FIELDS:
        await _variable(server, event_type, st, name, vtype, _DEFAULTS[vtype], prop=True)

    # ---- the station's instance
    objects = nid(ua.ObjectIds.ObjectsFolder)
    vs = await _object(
        server, objects, nid(object_name, st), qn(object_name, st), mvid(MV_VISION_SYSTEM_TYPE),
        reference=ua.ObjectIds.Organizes, notifier=True,
    )  # fmt: skip
    await server.nodes.server.add_reference(vs.nodeid, ua.ObjectIds.HasNotifier)
    await vs.add_reference(event_type.nodeid, ua.ObjectIds.GeneratesEvent)

    def sid(path: str) -> ua.NodeId:
        return nid(f"{object_name}.{path}", st)

    sm = await _object(server, vs.nodeid, sid("VisionStateMachine"), qn("VisionStateMachine", mv), vsm_type.nodeid)
    state, state_id = await _state_variable(server, sm, st, "Preoperational", mvid(MV_STATES["Preoperational"]))
    auto = await _object(
        server, sm.nodeid, sid("VisionStateMachine.AutomaticModeStateMachine"), qn("AutomaticModeStateMachine", mv),
        auto_type.nodeid,
    )  # fmt: skip
    auto_state, auto_state_id = await _state_variable(
        server, auto, st, "Initialized", mvid(MV_AUTO_STATES["Initialized"])
    )
    start_single_job = await _method(
        server, auto, sid("VisionStateMachine.AutomaticModeStateMachine.StartSingleJob"), qn("StartSingleJob", mv),
        handlers["start_single_job"],
        [
            ("MeasId", ua.VariantType.String, "Measurement id (OPC 40100 MeasIdDataType.Id); empty for none"),
            ("PartId", ua.VariantType.String, "The part's serial / DMC; empty: the station names the part"),
            ("RecipeId", ua.VariantType.String, "Recipe (RecipeIdExternalDataType.ExternalId.Id); empty: current"),
            ("ProductId", ua.VariantType.String, "Product code (ProductIdDataType.Id); empty: current"),
        ],
        [
            ("JobId", ua.VariantType.String, "The trigger's counter, as text (JobIdDataType.Id)"),
            ("Error", ua.VariantType.Int32, "0 on success"),
        ],
    )  # fmt: skip
    line_state = await _variable(server, vs, st, "LineState", ua.VariantType.String, "HALTED")
    heartbeat = await _variable(server, vs, st, "Heartbeat", ua.VariantType.UInt32, 0)

    recipes = await _object(
        server, vs.nodeid, sid("RecipeManagement"), qn("RecipeManagement", mv), mvid(MV_RECIPE_MANAGEMENT_TYPE)
    )
    prepare_product = await _method(
        server, recipes, sid("RecipeManagement.PrepareProduct"), qn("PrepareProduct", mv), handlers["prepare_product"],
        [("ProductId", ua.VariantType.String, "Product code whose recipe the station switches to")],
        [
            ("InternalId", ua.VariantType.String, "The recipe now selected"),
            ("Error", ua.VariantType.Int32, "0 on success, -1 when the station refused the product"),
        ],
    )  # fmt: skip
    select_recipe = await _method(
        server, recipes, sid("RecipeManagement.SelectRecipe"), qn("SelectRecipe", st), handlers["select_recipe"],
        [("Name", ua.VariantType.String, "The station recipe to switch to")],
        [("Error", ua.VariantType.Int32, "0 on success, -1 when the station refused the recipe")],
    )  # fmt: skip
    active_recipe = await _variable(server, recipes, st, "ActiveRecipe", ua.VariantType.String, "")

    results_obj = await _object(
        server, vs.nodeid, sid("ResultManagement"), qn("ResultManagement", mv), mvid(MV_RESULT_MANAGEMENT_TYPE)
    )
    results = {}
    for name, vtype, initial, writable in ST_RESULT_VARIABLES:
        node = await _variable(server, results_obj, st, name, vtype, initial, writable=writable)
        results[name] = node
    acknowledge = await _method(
        server, results_obj, sid("ResultManagement.Acknowledge"), qn("Acknowledge", st), handlers["acknowledge"],
        [("Counter", ua.VariantType.UInt32, "The counter of the result the PLC has read")],
        [],
    )  # fmt: skip
    trigger = await _method(
        server, vs, sid("Trigger"), qn("Trigger", st), handlers["trigger"],
        [
            ("Counter", ua.VariantType.UInt32, "The PLC's part counter; 0: the station counts"),
            ("PartId", ua.VariantType.String, "The part's serial / DMC; empty: the station names the part"),
            ("Product", ua.VariantType.String, "Product (recipe) code; empty: current"),
        ],
        [
            ("Counter", ua.VariantType.UInt32, "The counter the result will carry"),
            ("DeadlineMs", ua.VariantType.Double, "Milliseconds from now by which the result is published"),
        ],
    )  # fmt: skip
    return StationNodes(
        mv=mv,
        st=st,
        vision_system=vs,
        state_machine=sm,
        state=state,
        state_id=state_id,
        auto_state_machine=auto,
        auto_state=auto_state,
        auto_state_id=auto_state_id,
        line_state=line_state,
        heartbeat=heartbeat,
        active_recipe=active_recipe,
        result_management=results_obj,
        results=results,
        event_type=event_type,
        start_single_job=start_single_job,
        trigger=trigger,
        acknowledge=acknowledge,
        prepare_product=prepare_product,
        select_recipe=select_recipe,
    )
