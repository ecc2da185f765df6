// The storage account: every queue, table and blob container of the service's data model (sync_core/names.py),
// identity-only access (no shared keys), and the package container Flex Consumption deploys from.

param location string
param tags object
param resourceToken string

@description('Principal id of the function app identity.')
param identityPrincipalId string

@description('Log Analytics workspace that receives the storage logs and metrics.')
param workspaceId string

@description('Replication, chosen in main.bicep (storageSkuName).')
param skuName string

// sync_core/names.py: QUEUES and POISON_QUEUES. The poison queues exist from the start: the app's poison
// consumers listen on them before any message has failed.
var queueNames = [
  'inbound-messages'
  'lifecycle-events'
  'catchup-requests'
  'enrollio-events'
  'inbound-messages-poison'
  'lifecycle-events-poison'
  'catchup-requests-poison'
  'enrollio-events-poison'
]

// sync_core/names.py: TABLES.
var tableNames = [
  'Connections'
  'Subscriptions'
  'Mailboxes'
  'Threads'
  'ThreadKeys'
  'Messages'
  'Skips'
  'IdempotencyKeys'
  'DeltaCursors'
  'OAuthFlows'
  'Failures'
  'SpentSignatures'
  'EventOutbox'
]

// sync_core/names.py: CONTAINERS.
var containerNames = [
  'message-bodies'
  'attachments'
  'token-caches'
  'mailbox-gates'
]

// Platform only: Flex Consumption reads the published package from this container.
var deploymentContainerName = 'app-package'

// Built-in roles, each assigned on this account only.
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: Flex Consumption without VNet integration reaches its storage over the public endpoint; every request is Entra-authenticated (shared keys off).
  // checkov:skip=CKV_AZURE_59: same reason as CKV_AZURE_35; anonymous blob access is off (allowBlobPublicAccess: false).
  // checkov:skip=CKV_AZURE_206: the SKU is the storageSkuName parameter (zone-redundant by default), which the check cannot evaluate; geo-replication is the operator's choice.
  // checkov:skip=CKV_AZURE_43: the name is 'st' plus uniqueString(): 15 lowercase letters and digits, which the check cannot evaluate.
  name: 'st${resourceToken}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [
  for name in containerNames: {
    parent: blobService
    name: name
    properties: {
      publicAccess: 'None'
    }
  }
]

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [
  for name in queueNames: {
    parent: queueService
    name: name
  }
]

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource tables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [
  for name in tableNames: {
    parent: tableService
    name: name
  }
]

resource blobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, identityPrincipalId, storageBlobDataOwner)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwner)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource queueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, identityPrincipalId, storageQueueDataContributor)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributor)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource tableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, identityPrincipalId, storageTableDataContributor)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageTableDataContributor)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Every read, write and delete of each service, and its transaction metrics, go to the workspace.
var serviceDiagnostics = {
  workspaceId: workspaceId
  logs: [
    {
      categoryGroup: 'allLogs'
      enabled: true
    }
  ]
  metrics: [
    {
      category: 'Transaction'
      enabled: true
    }
  ]
}

resource accountDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-workspace'
  scope: account
  properties: {
    workspaceId: workspaceId
    metrics: [
      {
        category: 'Transaction'
        enabled: true
      }
    ]
  }
}

resource blobDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-workspace'
  scope: blobService
  properties: serviceDiagnostics
}

resource queueDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-workspace'
  scope: queueService
  properties: serviceDiagnostics
}

resource tableDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-workspace'
  scope: tableService
  properties: serviceDiagnostics
}

output accountName string = account.name
output deploymentContainerName string = deploymentContainerName
